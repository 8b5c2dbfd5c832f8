"""A test set's lesion sizes against the post-processing's: a measured reason for low numbers at a scale.

The published post-processing median-filters the anomaly map with a k³ window, which flattens any
isolated bright spot of fewer than half the window's voxels, and then removes connected components of
at most a few voxels. Where the typical lesion of a test set, on the model grid, is that small, most
lesions cannot survive post-processing and a low Dice says so, not that the model missed them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mddpm.data.cache import load_prepared
from mddpm.errors import MddpmError
from mddpm.evaluation.postprocess import PostprocessSettings

CONNECTIVITY = ndimage.generate_binary_structure(3, 3)  # 26-connected, as the component removal


@dataclass(frozen=True)
class LesionScale:
    """Lesion (connected component) sizes of a test set on the model grid, and the post-processing sizes."""

    volumes: int
    lesions: int
    median_voxels: float
    voxel_mm: tuple[float, float, float]
    grid: tuple[int, ...]
    median_kernel: int
    removed_if_voxels_at_most: int

    @property
    def median_erases_below(self) -> float:
        """An isolated spot of fewer voxels than this disappears under the median window."""
        return self.median_kernel ** 3 / 2

    @property
    def typical_lesion_is_erased(self) -> bool:
        return self.median_voxels <= max(self.removed_if_voxels_at_most, self.median_erases_below)

    def sentence(self) -> str:
        """One line: the measured sizes, and what to expect when typical lesions are at or below them."""
        mm3 = self.median_voxels * float(np.prod(self.voxel_mm))
        spacing = " × ".join(f"{v:g}" for v in self.voxel_mm)
        text = (f"{self.lesions} lesions in {self.volumes} volumes; median lesion {self.median_voxels:g} voxels on "
                f"the {'×'.join(map(str, self.grid))} model grid ({mm3:,.0f} mm³, voxels of {spacing} mm). "
                f"Post-processing flattens isolated spots smaller than half its {self.median_kernel}³ = "
                f"{self.median_kernel ** 3}-voxel median window and removes components of ≤ "
                f"{self.removed_if_voxels_at_most} voxels.")
        if self.typical_lesion_is_erased:
            text += (" Typical lesions here are at or below that size, so low Dice and AUPRC are expected at this "
                     "scale: most lesions cannot survive the post-processing.")
        return text


def lesion_scale(metrics: dict) -> LesionScale | None:
    """The :class:`LesionScale` of an evaluation's test set (``metrics.json`` contents) from the labels in its
    prepared cache; None when the cache is gone or the test set has no lesion."""
    try:
        prepared = load_prepared(metrics["test"]["prepared"])
    except (MddpmError, KeyError, TypeError):
        return None
    sizes = []
    for case in metrics.get("cases", []):
        if not case.get("lesion_voxels"):
            continue
        try:
            label = prepared.labels[prepared.index(case["case_id"])] > 0
        except MddpmError:
            return None
        components, count = ndimage.label(label, structure=CONNECTIVITY)
        sizes += np.bincount(components.ravel(), minlength=count + 1)[1:].tolist()
    if not sizes:
        return None
    try:
        post = PostprocessSettings.from_json((metrics.get("protocol") or {}).get("postprocess"))
    except ValueError:
        return None
    z, h, w = prepared.labels.shape[1:]
    spacing = np.sqrt((np.asarray(prepared.affines[0])[:3, :3] ** 2).sum(axis=0))
    return LesionScale(
        volumes=sum(1 for c in metrics["cases"] if c.get("lesion_voxels")), lesions=len(sizes),
        median_voxels=float(np.median(sizes)), voxel_mm=tuple(round(float(v), 3) for v in spacing), grid=(h, w, z),
        median_kernel=post.median_kernel, removed_if_voxels_at_most=post.max_component)
