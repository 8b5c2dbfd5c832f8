"""The image operations of ``mddpm preprocess``, one function per step, on SimpleITK images.

Geometry lives in the SimpleITK images (origin, spacing, direction in ITK's LPS world, mm), so
every step works in world space. :func:`to_nifti_array` converts to the team's convention
(array ``[X, Y, Z]`` + a NIfTI RAS affine) only when a volume is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mddpm.errors import MddpmError, first_line
from mddpm.io import read_nifti

# ITK's world is LPS, NIfTI's is RAS: the two differ by a flip of x and y
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
SUPPORTED_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def read_volume(path: str | Path, *, label: bool = False) -> sitk.Image:
    """Read a 3-D NIfTI / NRRD / MHA file; float32 for images, the stored integer/float type
    for masks and labels (``label=True``). A trailing 4th axis of length 1 is dropped.
    Raises :class:`MddpmError` naming the file for unreadable, truncated, non-3-D or non-finite
    images. NIfTI voxels are also read with nibabel, because ITK's NIfTI reader silently turns
    NaN/Inf into 0 and zero-fills a truncated ``.nii.gz``."""
    path = Path(path)
    if not path.is_file():
        raise MddpmError(f"{path}: file not found")
    if path.name.lower().endswith((".nii", ".nii.gz")):
        read_nifti(path)  # integrity only: the geometry below comes from ITK, like every later step
    try:
        img = sitk.ReadImage(str(path)) if label else sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError as e:
        raise MddpmError(f"{path}: cannot read as NIfTI/NRRD/MHA ({first_line(e)})") from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise MddpmError(f"{path}: has {img.GetNumberOfComponentsPerPixel()} components per voxel (expected a scalar "
                         "image)")
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if img.GetDimension() != 3:
        raise MddpmError(f"{path}: not a 3-D image (size {img.GetSize()})")
    if min(img.GetSize()) < 2:
        raise MddpmError(f"{path}: too small to be a scan (size {img.GetSize()})")
    arr = sitk.GetArrayViewFromImage(img)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise MddpmError(f"{path}: contains NaN or Inf voxels ({int((~np.isfinite(arr)).sum())} of {arr.size})")
    return img


def reorient(img: sitk.Image, orientation: str) -> sitk.Image:
    """Permute/flip the voxel axes so that they point as close as possible to ``orientation``
    (``sitk.DICOMOrient`` code: "LPS" = i towards Left, j Posterior, k Superior, which is what
    ANTs calls "RAI"). World coordinates are unchanged; no interpolation."""
    return sitk.DICOMOrient(img, orientation)


@dataclass(frozen=True)
class Grid:
    """A voxel grid in world space (ITK conventions: LPS mm, ``size`` in (i, j, k) order)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, img: sitk.Image) -> Grid:
        return cls(tuple(img.GetSize()), tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(img.GetDirection()))


def isotropic_grid(img: sitk.Image, spacing_mm: float) -> Grid:
    """The grid with ``spacing_mm`` voxels covering the same field of view as ``img`` (same
    direction; the first voxel's outer corner is kept; sizes rounded to whole voxels)."""
    size_in, spacing_in = np.array(img.GetSize()), np.array(img.GetSpacing())
    size = np.maximum(1, np.round(size_in * spacing_in / spacing_mm)).astype(int)
    direction = np.array(img.GetDirection()).reshape(3, 3)
    corner = np.array(img.GetOrigin()) - direction @ (spacing_in / 2)
    origin = corner + direction @ np.full(3, spacing_mm / 2)
    return Grid(tuple(int(s) for s in size), (spacing_mm,) * 3, tuple(float(o) for o in origin), img.GetDirection())


def same_grid(img: sitk.Image, grid: Grid, tol: float = 1e-4) -> bool:
    return (tuple(img.GetSize()) == grid.size
            and np.allclose(img.GetSpacing(), grid.spacing, atol=tol)
            and np.allclose(img.GetOrigin(), grid.origin, atol=tol)
            and np.allclose(img.GetDirection(), grid.direction, atol=tol))


def resample(img: sitk.Image, grid: Grid, transform: sitk.Transform | None = None, *,
             interpolator: int = sitk.sitkBSpline, pixel_type: int | None = None) -> sitk.Image:
    """Sample ``img`` on ``grid``: output point p takes the value of ``img`` at ``transform(p)``
    (identity when None); 0 outside. On its own grid without a transform, ``img`` is returned."""
    if transform is None and same_grid(img, grid):
        return img if pixel_type is None else sitk.Cast(img, pixel_type)
    return sitk.Resample(img, list(grid.size), transform or sitk.Transform(3, sitk.sitkIdentity), interpolator,
                         list(grid.origin), list(grid.spacing), list(grid.direction), 0.0,
                         img.GetPixelID() if pixel_type is None else pixel_type)


def binary_mask(img: sitk.Image) -> sitk.Image:
    """``img > 0`` as uint8 {0, 1}, same grid."""
    return sitk.Cast(sitk.Greater(sitk.Cast(img, sitk.sitkFloat32), 0.0), sitk.sitkUInt8)


@dataclass(frozen=True)
class RegistrationSettings:
    """Affine registration (SimpleITK ``ImageRegistrationMethod``), estimated on brain-only images.

    Mattes mutual information with ``histogram_bins`` bins on a regular grid of
    ``sampling_fraction`` of the fixed voxels (fixed ``seed``), linear interpolation, regular-step
    gradient descent with parameter scales from physical shifts, multi-resolution ``shrink``
    with Gaussian ``smoothing_vox`` per level, initialised by aligning the centres of mass."""

    histogram_bins: int = 32
    sampling_fraction: float = 0.2
    shrink: tuple[int, ...] = (4, 2, 1)
    smoothing_vox: tuple[float, ...] = (2.0, 1.0, 0.0)
    iterations: int = 200
    learning_rate_mm: float = 2.0
    min_step_mm: float = 1e-3
    relaxation: float = 0.5
    seed: int = 1  # > 0: SimpleITK reads 0 as "seed from the clock"

    def __post_init__(self):
        if self.seed <= 0:
            raise MddpmError(f"registration seed {self.seed}: must be > 0 (0 would seed from the clock)")
        if len(self.shrink) != len(self.smoothing_vox):
            raise MddpmError(f"registration: {len(self.shrink)} shrink factors but {len(self.smoothing_vox)} smoothing "
                             "sigmas")


def register_affine(fixed: sitk.Image, moving: sitk.Image, s: RegistrationSettings) -> tuple[sitk.Transform, dict]:
    """Estimate the affine ``T`` with ``moving(T(p)) ~ fixed(p)`` (maps fixed-space points to
    moving-space points, mm). Returns ``(T, info)``; ``info`` has the final metric value (lower
    is better for Mattes MI in ITK's sign convention), iterations and stop condition."""
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    init = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                             sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=s.histogram_bins)
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(s.sampling_fraction, s.seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=s.learning_rate_mm, minStep=s.min_step_mm,
                                                 numberOfIterations=s.iterations, relaxationFactor=s.relaxation,
                                                 gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(s.shrink))
    reg.SetSmoothingSigmasPerLevel(list(s.smoothing_vox))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(init, inPlace=False)
    try:
        transform = reg.Execute(fixed, moving)
    except RuntimeError as e:
        raise MddpmError(f"registration failed ({first_line(e)})") from None
    info = {"metric": float(reg.GetMetricValue()), "iterations_last_level": int(reg.GetOptimizerIteration()),
            "stop": reg.GetOptimizerStopConditionDescription()}
    return transform, info


def affine_matrix(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 matrix (LPS mm) of a composite/affine transform: fixed point -> moving point."""
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in pts])
    m = np.eye(4)
    m[:3, 3] = mapped[0]
    m[:3, :3] = (mapped[1:] - mapped[0]).T
    return m


def bounding_box(mask: sitk.Image) -> tuple[list[int], list[int]]:
    """Inclusive voxel bounding box of ``mask > 0``: (start index, size), both (i, j, k)."""
    arr = sitk.GetArrayViewFromImage(mask) > 0  # [k, j, i]
    if not arr.any():
        raise MddpmError("the brain mask is empty")
    lo, hi = [], []
    for axis in (2, 1, 0):  # i, j, k
        other = tuple(a for a in range(3) if a != axis)
        nz = np.flatnonzero(arr.any(axis=other))
        lo.append(int(nz[0]))
        hi.append(int(nz[-1]))
    return lo, [h - l + 1 for l, h in zip(lo, hi)]


def crop(img: sitk.Image, start: list[int], size: list[int]) -> sitk.Image:
    """The sub-volume ``[start, start + size)`` with its world position kept."""
    return sitk.RegionOfInterest(img, size, start)


@dataclass(frozen=True)
class N4Settings:
    """N4 bias-field correction (SimpleITK ``N4BiasFieldCorrectionImageFilter``).

    ``iterations`` per fitting level, ``convergence`` threshold, B-spline control points from
    ``spline_distance_mm`` (per axis ``ceil(extent / distance) + order``, as ANTs ``-b [200]``),
    estimated on the image shrunk by ``shrink`` (ANTs ``-s``); the field is then evaluated at
    full resolution. Published (ANTsPy defaults + n4filter.py): [200]*4, 5e-4, 200 mm, shrink 4."""

    iterations: tuple[int, ...] = (200, 200, 200, 200)
    convergence: float = 5e-4
    spline_distance_mm: float = 200.0
    spline_order: int = 3
    shrink: int = 4
    histogram_bins: int = 200
    fwhm: float = 0.15
    wiener_noise: float = 0.01


def n4_correct(image: sitk.Image, mask: sitk.Image, s: N4Settings) -> tuple[sitk.Image, dict]:
    """Divide ``image`` by the bias field N4 estimates from the voxels with ``mask > 0`` and a
    positive intensity. Returns ``(corrected float32, info)``; ``info`` holds the field's range
    inside the mask and the iterations run."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    fit_mask = sitk.And(binary_mask(mask), binary_mask(image))
    if not sitk.GetArrayViewFromImage(fit_mask).any():
        raise MddpmError("N4: no voxel inside the brain mask has a positive intensity")
    small, small_mask = image, fit_mask
    if s.shrink > 1:
        small = sitk.Shrink(image, [s.shrink] * 3)
        small_mask = sitk.Shrink(fit_mask, [s.shrink] * 3)
        if not sitk.GetArrayViewFromImage(small_mask).any():
            small, small_mask = image, fit_mask
    extent = [(n - 1) * sp for n, sp in zip(small.GetSize(), small.GetSpacing())]
    control_points = [max(1, math.ceil(e / s.spline_distance_mm)) + s.spline_order for e in extent]
    f = sitk.N4BiasFieldCorrectionImageFilter()
    f.SetMaximumNumberOfIterations(list(s.iterations))
    f.SetConvergenceThreshold(s.convergence)
    f.SetNumberOfControlPoints(control_points)
    f.SetSplineOrder(s.spline_order)
    f.SetNumberOfHistogramBins(s.histogram_bins)
    f.SetBiasFieldFullWidthAtHalfMaximum(s.fwhm)
    f.SetWienerFilterNoise(s.wiener_noise)
    f.Execute(small, small_mask)
    log_field = f.GetLogBiasFieldAsImage(image)
    corrected = sitk.Cast(sitk.Divide(image, sitk.Exp(log_field)), sitk.sitkFloat32)
    field = np.exp(sitk.GetArrayViewFromImage(log_field)[sitk.GetArrayViewFromImage(fit_mask) > 0])
    info = {"control_points": control_points, "iterations_last_level": int(f.GetElapsedIterations()),
            "field_min": float(field.min() / np.median(field)), "field_max": float(field.max() / np.median(field))}
    return corrected, info


def to_nifti_array(img: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(array [X, Y, Z] in the image's pixel type, NIfTI RAS affine [4, 4]) of a 3-D image."""
    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    direction = np.array(img.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(img.GetSpacing())
    affine[:3, 3] = LPS_TO_RAS @ np.array(img.GetOrigin())
    return arr, affine


def from_nifti_array(arr: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """The SimpleITK image of an array ``[X, Y, Z]`` with a NIfTI RAS affine (no shear)."""
    lin = LPS_TO_RAS @ np.asarray(affine, dtype=float)[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(arr).transpose(2, 1, 0)))
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetDirection(tuple(float(d) for d in (lin / spacing).ravel()))
    img.SetOrigin(tuple(float(o) for o in LPS_TO_RAS @ np.asarray(affine, dtype=float)[:3, 3]))
    return img


def case_id(path: str | Path) -> str | None:
    """File name without its image extension (``sub-01_T2w.nii.gz`` -> ``sub-01_T2w``); None
    for a file that is not a supported image."""
    name = Path(path).name
    for suffix in SUPPORTED_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None
