"""One picture per evaluated case: input, reconstruction, anomaly map, thresholded map, ground truth.

Volumes are prepared-grid arrays [Z, H, W]; the figure shows one axial slice with H (the NIfTI
x axis) left to right and W (y) bottom to top. Uses matplotlib's object API (no pyplot state, no
display needed).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from mddpm.viz.png import png_bytes


def lesion_slice(label: np.ndarray, scores: np.ndarray | None = None) -> int:
    """Axial index to show: the middle of the slices that contain lesion voxels; without a lesion,
    the slice with the highest total score (or the middle slice)."""
    with_lesion = np.flatnonzero(np.asarray(label).reshape(label.shape[0], -1).any(axis=1))
    if with_lesion.size:
        return int(with_lesion[with_lesion.size // 2])
    if scores is not None and np.asarray(scores).any():
        return int(np.asarray(scores).reshape(scores.shape[0], -1).sum(axis=1).argmax())
    return label.shape[0] // 2


def render_case_figure(image: np.ndarray, reconstruction: np.ndarray | None, anomaly_map: np.ndarray,
                       prediction: np.ndarray, label: np.ndarray, title: str = "", z: int | None = None) -> bytes:
    """PNG bytes of the five panels for axial slice ``z`` (default :func:`lesion_slice`).

    ``image`` and ``reconstruction`` are in [0, 1] units; ``anomaly_map`` is the post-processed
    score (colour scale from 0 to its volume maximum, with a colour bar); ``prediction`` and ``label``
    are binary.
    A missing reconstruction leaves its panel empty.
    """
    if z is None:
        z = lesion_slice(label, anomaly_map)
    vmax = float(np.max(anomaly_map)) if np.max(anomaly_map) > 0 else 1.0
    panels = [
        ("input", image, {"cmap": "gray", "vmin": 0, "vmax": 1}),
        ("reconstruction", reconstruction, {"cmap": "gray", "vmin": 0, "vmax": 1}),
        ("anomaly map", anomaly_map, {"cmap": "inferno", "vmin": 0, "vmax": vmax}),
        ("prediction", prediction, {"cmap": "gray", "vmin": 0, "vmax": 1}),
        ("ground truth", label, {"cmap": "gray", "vmin": 0, "vmax": 1}),
    ]
    fig = Figure(figsize=(3 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels))
    for ax, (name, vol, style) in zip(axes, panels):
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
        if vol is None:
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes)
            continue
        shown = ax.imshow(np.asarray(vol[z], dtype=np.float32).T, origin="lower", interpolation="nearest", **style)
        if name == "anomaly map":
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
    fig.suptitle(f"{title}  (axial slice {z})".strip(), fontsize=11)
    fig.tight_layout()
    return png_bytes(fig, dpi=100)
