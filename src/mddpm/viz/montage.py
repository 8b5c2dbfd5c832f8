"""A PNG montage of dataset cases: a few axial slices per case with the lesion label outlined.

Volumes are read as NIfTI [X, Y, Z]; an axial slice is shown with x left to right and y bottom to
top. Uses matplotlib's object API (Agg, no pyplot state, no display needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mddpm.data.dataset import Case, load_dataset
from mddpm.errors import MddpmError
from mddpm.io import atomic_write, check_new_output, read_nifti


def _pick_slices(mask: np.ndarray, label: np.ndarray | None, count: int) -> list[int]:
    """Axial indices to show: the slices with most lesion voxels (at least 2 apart) for a labelled case,
    else evenly spaced through the central part of the brain (35-80 % of its height)."""
    if label is not None and label.any():
        area = label.reshape(-1, label.shape[2]).sum(0)
        chosen: list[int] = []
        for z in np.argsort(-area, kind="stable"):
            if area[z] == 0 or len(chosen) == count:
                break
            if all(abs(int(z) - c) >= 2 for c in chosen):
                chosen.append(int(z))
        return sorted(chosen)
    zs = np.flatnonzero(mask.reshape(-1, mask.shape[2]).any(0))
    lo, hi = (zs[0], zs[-1]) if zs.size else (0, mask.shape[2] - 1)
    return [int(round(lo + f * (hi - lo))) for f in np.linspace(0.35, 0.8, count)]


def _select_cases(cases: list[Case], n: int) -> list[Case]:
    """Up to ``n`` healthy cases, then up to ``n`` cases of each anomalous group, in dataset order."""
    groups: dict[str, list[Case]] = {}
    for case in cases:
        key = "healthy" if case.role == "healthy" else (case.group or "anomalous")
        groups.setdefault(key, []).append(case)
    ordered = sorted(groups, key=lambda g: g != "healthy")
    return [case for g in ordered for case in groups[g][:n]]


def preview_montage(dataset_root: str | Path, png_path: str | Path, n: int = 3, slices: int = 4,
                    force: bool = False) -> Path:
    """Write a PNG: one row per case (``n`` healthy and ``n`` of each anomalous group), ``slices`` axial
    slices each, grey scale to the 99.5th brain percentile, label outlined in red. Returns the path."""
    if n < 1 or slices < 1:
        raise MddpmError(f"{png_path}: need at least one case and one slice (n={n}, slices={slices})")
    png_path = check_new_output(png_path, force)
    dataset = load_dataset(dataset_root)
    chosen = _select_cases(list(dataset.cases.values()), n)
    if not chosen:
        raise MddpmError(f"{Path(dataset_root) / 'dataset.json'}: no cases to show")
    fig = Figure(figsize=(1.9 * slices, 2.0 * len(chosen)), facecolor="black")
    axes = fig.subplots(len(chosen), slices, squeeze=False)
    for row, case in zip(axes, chosen):
        image, _ = read_nifti(case.image)
        mask = read_nifti(case.mask)[0] > 0
        label = read_nifti(case.label)[0] > 0 if case.label is not None else None
        top = float(np.percentile(image[mask], 99.5)) if mask.any() else float(image.max()) or 1.0
        zs = _pick_slices(mask, label, slices)
        for col, ax in enumerate(row):
            ax.set_axis_off()
            if col >= len(zs):
                continue
            ax.imshow(image[:, :, zs[col]].T, origin="lower", cmap="gray", vmin=0, vmax=top,
                      interpolation="nearest")
            if label is not None and label[:, :, zs[col]].any():
                ax.contour(label[:, :, zs[col]].T.astype(float), levels=[0.5], colors="red", linewidths=0.6)
            ax.set_title(f"z={zs[col]}", color="white", fontsize=7, pad=2)
        kind = "healthy" if case.role == "healthy" else (case.group or "anomalous")
        row[0].text(-0.04, 0.5, f"{case.id}\n{kind}", transform=row[0].transAxes, rotation=90, ha="right",
                    va="center", color="white", fontsize=7)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.01, top=0.97, wspace=0.03, hspace=0.15)
    with atomic_write(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, facecolor=fig.get_facecolor())
    return Path(png_path)
