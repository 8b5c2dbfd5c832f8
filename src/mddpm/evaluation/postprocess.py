"""Post-processing of anomaly maps, as published (protocol §5.2 steps 2, 3 and 7).

Per volume: binarise the brain mask (> 0), erode it per axial slice with the 3×3 cross
``W // 25`` times, multiply the score by it, then apply a 3-D 5×5×5 median filter (mask first,
then median: the published order). After thresholding, 26-connected components of at most 7
voxels are removed.

Those constants are voxel counts made for the published 2 mm grid. :meth:`PostprocessSettings.for_grid`
gives them for a rule: ``"published"`` keeps the voxel counts on any grid (faithful);
``"physical"`` keeps their physical size (a 10 mm median window, components of at most 56 mm³
removed), which equals the published values at 2 mm and, at 4 mm, is a 3³ median and no component
removal (the published counts would cover 8× the volume there and erase lesions of a few voxels).

Everything runs on the tensor's device except connected-component labelling, which uses
``scipy.ndimage.label`` on the CPU (there is no labelling in torch); it is a few milliseconds
per 96×96×50 volume.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from mddpm.evaluation.metrics import binarise
from mddpm.kernels.median import median_filter_3d

CC_MAX_SIZE = 7  # components with at most this many voxels are removed (published: filled_area <= 7)
MEDIAN_KERNEL = 5
PUBLISHED_SPACING_MM = 2.0  # the voxel size the published constants were made for
POSTPROCESS_RULES = ("published", "physical")
# torch CPU threads while post-processing and scoring: the ops are small (one volume), so threads
# cost more in start-up and, on a busy machine, in contention than they gain (docs/speed.md)
POSTPROCESS_THREADS = 1


@dataclass(frozen=True)
class PostprocessSettings:
    """How one evaluation post-processes and segments a map: the one record that ``mddpm evaluate`` writes
    (``"postprocess"`` in ``metrics.json`` and ``threshold.json``) and ``detect``, the report and the
    lesion-scale line read back (:meth:`from_json`). Counts are voxels of the model grid."""

    rule: str = "published"  # "published" (voxel counts as published) or "physical" (their sizes in mm)
    voxel_mm: float | None = None  # the grid's voxel edge the counts were derived for; None: not recorded
    erosion_iterations: int | None = None  # brain-mask erosion per axial slice; None = W // 25 (published)
    median_kernel: int = MEDIAN_KERNEL  # odd edge of the 3-D median window; 1 = none
    max_component: int = CC_MAX_SIZE  # components of at most this many voxels are removed

    @classmethod
    def for_grid(cls, rule: str, spacing_mm: float, width: int | None = None) -> PostprocessSettings:
        """The settings of ``rule`` on a grid of isotropic ``spacing_mm`` voxels and slices ``width`` wide.

        ``"published"``: 5 and 7 voxels on any grid. ``"physical"``: the same physical sizes as the
        published values at 2 mm: window = the odd count nearest to 10 mm / spacing (at least 1),
        components ≤ floor(56 mm³ / voxel volume). Raises ValueError for another rule or spacing ≤ 0.
        """
        if rule not in POSTPROCESS_RULES:
            raise ValueError(f"unknown post-processing rule {rule!r} (known: {', '.join(POSTPROCESS_RULES)})")
        if not spacing_mm > 0:
            raise ValueError(f"voxel spacing must be positive, got {spacing_mm} mm")
        kernel, max_component = MEDIAN_KERNEL, CC_MAX_SIZE
        if rule == "physical":
            scale = PUBLISHED_SPACING_MM / spacing_mm
            kernel = max(1, 2 * int(np.floor((MEDIAN_KERNEL * scale - 1) / 2 + 0.5)) + 1)
            max_component = int(np.floor(CC_MAX_SIZE * scale**3 + 1e-9))
        erosion = published_erosion_iterations(width) if width is not None else None
        return cls(rule, round(float(spacing_mm), 4), erosion, kernel, max_component)

    def to_json(self) -> dict:
        """The stored form, with the fixed parts of the protocol spelled out."""
        return {
            "rule": self.rule, "voxel_mm": self.voxel_mm,
            "brain_mask": "binarised with > 0, eroded per axial slice with the 3x3 cross, multiplied into the map",
            "erosion_iterations": self.erosion_iterations,
            "median_filter": {"kernel": self.median_kernel, "border": "reflect (scipy: half-sample symmetric)"},
            "order": "mask, then median (published)",
            "components": {"connectivity": 26, "removed_if_voxels_at_most": self.max_component},
        }

    @classmethod
    def from_json(cls, stored: dict | None) -> PostprocessSettings:
        """The settings :meth:`to_json` wrote (None or a missing field: the published value). Raises
        ValueError naming the first malformed field: objects where objects go, counts as integers."""
        stored = {} if stored is None else stored
        if not isinstance(stored, dict):
            raise ValueError("expected an object")
        median, components = stored.get("median_filter", {}), stored.get("components", {})
        for name, part in (("median_filter", median), ("components", components)):
            if not isinstance(part, dict):
                raise ValueError(f"{name!r} must be an object")
        settings = cls(stored.get("rule", "published"), stored.get("voxel_mm"), stored.get("erosion_iterations"),
                       median.get("kernel", MEDIAN_KERNEL), components.get("removed_if_voxels_at_most", CC_MAX_SIZE))
        checks = (("rule", settings.rule in POSTPROCESS_RULES),
                  ("voxel_mm", settings.voxel_mm is None or _number(settings.voxel_mm) and settings.voxel_mm > 0),
                  ("erosion_iterations", settings.erosion_iterations is None or _count(settings.erosion_iterations)),
                  ("median_filter.kernel", _count(settings.median_kernel) and settings.median_kernel % 2 == 1),
                  ("components.removed_if_voxels_at_most", _count(settings.max_component)))
        bad = next((name for name, ok in checks if not ok), None)
        if bad is not None:
            raise ValueError(f"{bad}: unexpected value")
        return settings

    def postprocess(self, score: torch.Tensor, brain_mask: torch.Tensor, threads: int | None = None) -> torch.Tensor:
        """Masked and median-filtered map [Z, H, W] float32 (:func:`postprocess_map`)."""
        return postprocess_map(score, brain_mask, erosion_iterations=self.erosion_iterations,
                               median_kernel=self.median_kernel, threads=threads)

    def segment(self, processed: torch.Tensor, threshold: float) -> torch.Tensor:
        """``processed > threshold`` (compared in the map's dtype) without its small components: bool [Z, H, W]."""
        return remove_small_components(binarise(processed, threshold), max_size=self.max_component)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


_CC_STRUCTURE = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity (skimage label connectivity=3)


@contextlib.contextmanager
def cpu_threads(n: int = POSTPROCESS_THREADS):
    """Run the block with ``n`` torch CPU threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def published_erosion_iterations(width: int) -> int:
    """The published number of erosion steps: ``W // 25`` (3 for 96-voxel slices)."""
    return width // 25


def erode_mask_axial(mask: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """Erode each axial slice of ``mask`` [..., H, W] (binarised with > 0) with the 3×3 cross.

    Returns a bool tensor of the same shape. Identical to ``scipy.ndimage.binary_erosion`` with
    ``generate_binary_structure(2, 1)`` and ``iterations`` per slice, including its border rule
    (outside the slice counts as background). ``iterations=0`` leaves the mask as is (scipy would
    instead erode until nothing changes).
    """
    outside = mask <= 0
    for _ in range(iterations):
        padded = torch.ones((*outside.shape[:-2], outside.shape[-2] + 2, outside.shape[-1] + 2),
                            dtype=torch.bool, device=outside.device)
        padded[..., 1:-1, 1:-1] = outside
        outside = (outside | padded[..., :-2, 1:-1] | padded[..., 2:, 1:-1]
                   | padded[..., 1:-1, :-2] | padded[..., 1:-1, 2:])
    return ~outside


def postprocess_map(score: torch.Tensor, brain_mask: torch.Tensor, erosion_iterations: int | None = None,
                    median_kernel: int | None = MEDIAN_KERNEL, threads: int | None = None) -> torch.Tensor:
    """The published post-processing of one anomaly map: [Z, H, W] (or [N, Z, H, W]) -> same shape.

    Multiply ``score`` by the brain mask (binarised with > 0) eroded per axial slice
    (``erosion_iterations``; ``None`` = ``W // 25`` as published), then 3-D median filter with
    ``median_kernel`` (``None`` or 1 = no filtering; ``threads``: see
    :func:`~mddpm.kernels.median.median_filter_3d`). Float32 out, same device.
    """
    if score.shape != brain_mask.shape:
        raise ValueError(f"score {tuple(score.shape)} and brain mask {tuple(brain_mask.shape)} differ in shape")
    if erosion_iterations is None:
        erosion_iterations = published_erosion_iterations(score.shape[-1])
    masked = score.float() * erode_mask_axial(brain_mask, erosion_iterations)
    if median_kernel is None or median_kernel == 1:
        return masked
    return median_filter_3d(masked, median_kernel, threads=threads)


def remove_small_components(binary: torch.Tensor, max_size: int = CC_MAX_SIZE) -> torch.Tensor:
    """Drop 26-connected components of at most ``max_size`` voxels from ``binary`` [Z, H, W].

    Same result as the published ``filter_3d_connected_components`` (skimage ``label`` with
    connectivity 3, remove if ``filled_area <= 7``): skimage fills holes with 26-connected
    background, and enclosing even one voxel that way takes 26 voxels, so for components this
    small the filled area equals the voxel count. Labelling runs on the CPU; the result is a bool
    tensor on ``binary``'s device.
    """
    arr = (binary > 0).cpu().numpy()
    labels, count = ndimage.label(arr, structure=_CC_STRUCTURE)
    if count == 0:
        return torch.from_numpy(arr).to(binary.device)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes > max_size
    keep[0] = False
    return torch.from_numpy(keep[labels]).to(binary.device)
