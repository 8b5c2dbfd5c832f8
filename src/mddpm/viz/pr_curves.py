"""Pooled precision-recall curves: every voxel of every post-processed test map against its label.

Scores are counted per float16 value (a histogram of 65,536 codes per map), which is finer than any
plot and lets the pool of many volumes stay a fixed size.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from matplotlib.figure import Figure

from mddpm.viz.png import png_bytes

_HALF_CODES = 1 << 16

_CURVE_POINTS = 1000

_COLOURS = ["#3b5bdb", "#e8590c", "#2b8a3e", "#c2255c", "#5f3dc4", "#0b7285", "#a61e4d", "#5c940d", "#862e9c",
            "#d9480f", "#495057"]


def sortable_half_key(x: torch.Tensor) -> torch.Tensor:
    """Codes 0..65535 (int64, same shape) that order like the values of ``x`` rounded to float16
    (−0 counts as +0). Equal codes = equal float16 values."""
    bits = ((x.half() + 0.0).view(torch.int16).to(torch.int32)) & 0xFFFF  # + 0.0: -0 becomes +0
    return torch.where(bits >= 0x8000, 0xFFFF - bits, bits + 0x8000).long()


def pr_from_histograms(total: np.ndarray, positive: np.ndarray) -> dict:
    """Precision and recall at every distinct score from counts per score code (ascending codes).

    ``total[k]`` voxels and ``positive[k]`` lesion voxels have code ``k``; predicting ``code >= k``
    for each ``k`` from high to low gives the curve. Returns {"recall", "precision" (thinned to about
    1000 points, recall ascending), "ap" (average precision, step-wise as scikit-learn, over all
    codes), "voxels", "lesion_voxels"}; no curve (empty lists, ap None) without lesion voxels.
    """
    t, p = np.asarray(total, np.int64)[::-1], np.asarray(positive, np.int64)[::-1]
    keep = t > 0
    t, p = t[keep], p[keep]
    n_pos = int(p.sum())
    out = {"recall": [], "precision": [], "ap": None, "voxels": int(t.sum()), "lesion_voxels": n_pos}
    if n_pos == 0:
        return out
    predicted, tp = np.cumsum(t), np.cumsum(p)
    precision, recall = tp / predicted, tp / n_pos
    out["ap"] = float(np.sum(np.diff(recall, prepend=0.0) * precision))
    idx = np.unique(np.concatenate([[0, recall.size - 1],
                                    np.searchsorted(recall, np.linspace(0, 1, _CURVE_POINTS + 1)).clip(0, recall.size - 1)]))
    out["recall"], out["precision"] = recall[idx].tolist(), precision[idx].tolist()
    return out


def pooled_pr_curve(maps_dir: str | os.PathLike, device: str = "cpu", postprocess: dict | None = None) -> dict:
    """Pooled precision-recall curve of a maps folder: every voxel of every post-processed map (with the
    evaluation's stored ``postprocess`` settings; None: the published ones) against its label. See
    :func:`pr_from_histograms`; adds "volumes"."""
    from mddpm.evaluation.evaluate import open_maps
    from mddpm.evaluation.postprocess import postprocess_map, stored_constants

    maps = open_maps(maps_dir, "test")
    dev = torch.device(device)
    erosion, kernel, _ = stored_constants(postprocess)
    total = torch.zeros(_HALF_CODES, dtype=torch.int64, device=dev)
    positive = torch.zeros(_HALF_CODES, dtype=torch.int64, device=dev)
    with torch.inference_mode():
        for cid in maps.case_ids:
            score, mask, label = maps.load(cid, dev)
            key = sortable_half_key(postprocess_map(score, mask, erosion_iterations=erosion, median_kernel=kernel))
            total += torch.bincount(key.reshape(-1), minlength=_HALF_CODES)
            positive += torch.bincount(key[label], minlength=_HALF_CODES)
    return {**pr_from_histograms(total.cpu().numpy(), positive.cpu().numpy()), "volumes": len(maps.case_ids)}


def pr_figure(curves: list[tuple[str, dict]], title: str, dashed: set[str] = frozenset()) -> bytes:
    """PNG of precision-recall curves ``(name, curve)`` (curves from :func:`pooled_pr_curve`); names in
    ``dashed`` are drawn dashed. When every precision stays below 0.25 the y axis is zoomed (and says so)."""
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
