"""``overlay.png`` of ``mddpm detect``: chosen axial slices of the scan with the anomaly map and the
segmentation outline, orientation letters (from the scan's affine) on every panel, and the share of
the brain the model grid left unscored in the title."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from mddpm.io import atomic_write

OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}


def overlay_slices(brain: np.ndarray, segmentation: np.ndarray, count: int = 5) -> list[int]:
    """Axial slice indices to show: those with the most segmented voxels (in slice order), or, without
    a segmentation, ``count`` slices evenly spread over the brain's extent."""
    per_slice = segmentation.sum(axis=(0, 1))
    if per_slice.any():
        best = np.argsort(per_slice, kind="stable")[::-1][:count]
        return sorted(int(k) for k in best if per_slice[k] > 0)
    zs = np.flatnonzero(brain.any(axis=(0, 1)))
    return sorted({int(k) for k in np.linspace(zs[0], zs[-1], count + 2)[1:-1].round()})


def orientation_labels(affine: np.ndarray) -> dict[str, str]:
    """Letters at the panel edges (``left``, ``right``, ``bottom``, ``top``) for a slice ``image[:, :, k].T``
    drawn with ``origin="lower"``: array axis 0 runs to the right, axis 1 upwards."""
    x, y, _ = nib.aff2axcodes(np.asarray(affine, dtype=np.float64))
    return {"left": OPPOSITE[x], "right": x, "bottom": OPPOSITE[y], "top": y}


def save_overlay(path: Path, image: np.ndarray, brain: np.ndarray, score: np.ndarray, segmentation: np.ndarray,
                 affine: np.ndarray, unscored_fraction: float = 0.0) -> None:
    """PNG: per chosen axial slice, the scan in grey, the anomaly map in colour on top (colour bar on the right;
    unscored brain, NaN in the map, is left uncoloured), the segmentation outline and the orientation letters."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    slices = overlay_slices(brain, segmentation)
    finite = score[np.isfinite(score)]
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    letters = orientation_labels(affine)
    fig = Figure(figsize=(2.6 * len(slices), 3.2))
    axes = fig.subplots(1, len(slices), squeeze=False)
    for ax, k in zip(axes[0], slices):
        ax.imshow(image[:, :, k].T, cmap="gray", origin="lower")
        shown = ax.imshow(np.ma.masked_where(~(score[:, :, k].T > 0), score[:, :, k].T), cmap="hot", alpha=0.6,
                          vmin=0, vmax=vmax, origin="lower")
        if segmentation[:, :, k].any():
            ax.contour(segmentation[:, :, k].T.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
        for where, (u, v, ha, va) in {"left": (0.02, 0.5, "left", "center"), "right": (0.98, 0.5, "right", "center"),
                                      "bottom": (0.5, 0.02, "center", "bottom"),
                                      "top": (0.5, 0.98, "center", "top")}.items():
            ax.text(u, v, letters[where], transform=ax.transAxes, ha=ha, va=va, color="yellow", fontsize=8,
                    fontweight="bold")
        ax.set_title(f"z = {k}", fontsize=8)
        ax.axis("off")
    if unscored_fraction > 0:
        fig.suptitle(f"{100 * unscored_fraction:.1f} % of the brain outside the model grid: not scored",
                     fontsize=8, color="red")
    fig.subplots_adjust(left=0.01, right=0.93, bottom=0.01, top=0.84, wspace=0.02)
    bar = fig.colorbar(shown, cax=fig.add_axes((0.945, 0.08, 0.012, 0.72)))
    bar.ax.tick_params(labelsize=7)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
