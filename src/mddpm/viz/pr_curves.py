"""The picture of pooled precision-recall curves (each the ``pr.json`` of
:func:`mddpm.evaluation.pr_curve.pooled_pr_curve`)."""

from __future__ import annotations

import math

from matplotlib.figure import Figure

from mddpm.viz.png import png_bytes

_COLOURS = ["#3b5bdb", "#e8590c", "#2b8a3e", "#c2255c", "#5f3dc4", "#0b7285", "#a61e4d", "#5c940d", "#862e9c",
            "#d9480f", "#495057"]


def pr_figure(curves: list[tuple[str, dict]], title: str, dashed: set[str] = frozenset()) -> bytes:
    """PNG of precision-recall curves ``(name, curve)`` (dicts with "recall", "precision", "ap"); names
    in ``dashed`` are drawn dashed. When every precision stays below 0.25 the y axis is zoomed (and says so)."""
    shown = [(name, c) for name, c in curves if c and c["recall"]]
    rows = math.ceil(len(shown) / 2)
    fig = Figure(figsize=(6.0, 4.0 + 0.19 * rows))
    ax = fig.subplots()
    for i, (name, curve) in enumerate(shown):
        ax.plot(curve["recall"], curve["precision"], color=_COLOURS[i % len(_COLOURS)], lw=1.6,
                ls="--" if name in dashed else "-", label=f"{name} · AP {curve['ap']:.3g}")
    top = max((max(c["precision"]) for _, c in shown), default=1.0)
    zoomed = top < 0.25
    ax.set_xlim(0, 1)
    ax.set_ylim(0, top * 1.08 if zoomed else 1.02)
    ax.set_xlabel("recall (pooled lesion voxels)")
    ax.set_ylabel("precision" + (" (axis zoomed)" if zoomed else ""))
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if shown:
        ax.set_title(title + " (AP: pooled)", fontsize=11)
        ax.legend(fontsize=7.2, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2 if len(shown) > 1 else 1,
                  frameon=False, handlelength=2.2, columnspacing=1.2)
    fig.tight_layout()
    return png_bytes(fig)
