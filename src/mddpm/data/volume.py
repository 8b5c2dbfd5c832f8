"""One volume onto the model grid (the published online preprocessing, protocol §1.4), and a map back.

Per volume, in the published order:
1. curvature-flow smoothing of the image (SimpleITK ``CurvatureFlow``, time step 0.125,
   3 iterations, on the voxel spacing of the file; images only);
2. centred crop/pad to ``crop_mm`` (zero padding; for an odd difference the extra voxel is
   removed/added at the start, like ``torchio.CropOrPad``);
3. percentile normalisation: the 1st/99th percentiles of the in-mask voxels, the whole volume
   clipped to them and min-max scaled to [0, 1] (background becomes exactly 0);
4. resampling to ``spacing_mm`` (cubic B-spline for the image, nearest neighbour for mask and
   label). Output voxel ``o`` samples input voxel ``f * o + (f - 1) / 2`` with
   ``f = spacing_mm / input spacing``, i.e. the origin moves by half a voxel, as torchio 0.18's
   ``Resample`` did (the published version; newer torchio centres the grid differently).
   The B-spline can overshoot [0, 1] slightly near edges; like the published code we keep it.

Step 4 is written with SimpleITK directly (the library torchio wrapped) so that the grid is the
published one whatever the installed torchio does. The published code ignored the file's
affine (it assumed 1 mm voxels); here the crop is in mm with the voxel sizes of the affine, which
is identical for the published 1 mm data and also handles e.g. 2 mm synthetic data.

A prepared volume is stored as ``[Z, H, W]`` (axial slices; ``H`` = NIfTI x, ``W`` = y); its
affine maps voxel indices of the ``[H, W, Z]`` array (``arr.transpose(1, 2, 0)``) to world mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from mddpm.data.grids import GridSpec, get_grid
from mddpm.errors import MddpmError

CURVATURE_FLOW = {"time_step": 0.125, "iterations": 3}


@dataclass
class PreparedVolume:
    image: np.ndarray  # [Z, H, W] float32, ~[0, 1]
    mask: np.ndarray  # [Z, H, W] uint8 {0, 1}
    label: np.ndarray | None  # [Z, H, W] uint8 {0, 1}
    affine: np.ndarray  # [4, 4]: voxel index of the [H, W, Z] array -> world mm


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each array axis (column norms of the affine's 3x3 part)."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def centred_start(extent: tuple[int, ...], size: tuple[int, ...]) -> np.ndarray:
    """Index (relative to the extent's first voxel) that a centred window of ``size`` starts at; for an odd
    difference the extra voxel is removed/added at the start, like ``torchio.CropOrPad``."""
    return np.array([int(math.ceil((n - s) / 2)) if n >= s else -int(math.ceil((s - n) / 2))
                     for n, s in zip(extent, size)])


def brain_start(mask: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Start of a window of ``size`` centred on the bounding box of ``mask`` (not on the array): the same
    brain voxels fall in the window whatever zero padding surrounds the scan."""
    nonzero = np.nonzero(mask)
    if not nonzero[0].size:
        raise MddpmError("brain mask is empty")
    low = np.array([int(ix.min()) for ix in nonzero])
    high = np.array([int(ix.max()) for ix in nonzero])
    return low + centred_start(tuple(high - low + 1), size)


def crop_or_pad(arr: np.ndarray, size: tuple[int, ...], start: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Crop/zero-pad of ``arr`` to ``size``, centred (the odd extra voxel at the start) unless ``start`` is given.

    Returns (array, start) where ``start[i]`` is the input index that becomes output index 0
    (negative when padded).
    """
    start = centred_start(arr.shape, size) if start is None else np.asarray(start, dtype=int)
    out = np.zeros(size, dtype=arr.dtype)
    src = tuple(slice(max(b, 0), min(b + s, n)) for b, s, n in zip(start, size, arr.shape))
    dst = tuple(slice(sl.start - b, sl.stop - b) for sl, b in zip(src, start))
    out[dst] = arr[src]
    return out, start


def normalise_percentiles(image: np.ndarray, mask: np.ndarray,
                          percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """Clip the whole volume to the in-mask percentiles, then min-max scale to [0, 1] (float32)."""
    values = image[mask]
    if values.size == 0:
        raise MddpmError("brain mask is empty inside the crop")
    low, high = np.percentile(values, percentiles)
    out = np.clip(image, low, high).astype(np.float32)
    low, high = out.min(), out.max()
    if high <= low:
        raise MddpmError("image is constant inside the brain mask")
    return (out - low) / (high - low)


def _sitk_image(arr: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> sitk.Image:
    """SimpleITK image whose index (i, j, k) is ``arr[i, j, k]``."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    return img


def _from_sitk(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0)


def curvature_flow(image: np.ndarray, spacing: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """SimpleITK CurvatureFlow (time step 0.125, 3 iterations) on [X, Y, Z] with voxel ``spacing`` mm."""
    out = sitk.CurvatureFlow(_sitk_image(image.astype(np.float32), spacing),
                             timeStep=CURVATURE_FLOW["time_step"], numberOfIterations=CURVATURE_FLOW["iterations"])
    return _from_sitk(out).astype(np.float32)


def _resample(arr: np.ndarray, factor: np.ndarray, size, interpolator) -> np.ndarray:
    """Sample ``arr`` [X, Y, Z] at input indices ``factor * o + (factor - 1) / 2`` for o < size."""
    f = sitk.ResampleImageFilter()
    f.SetSize([int(s) for s in size])
    f.SetOutputSpacing([float(x) for x in factor])
    f.SetOutputOrigin([float(x) for x in (factor - 1) / 2])
    f.SetInterpolator(interpolator)
    f.SetDefaultPixelValue(0.0)
    return _from_sitk(f.Execute(_sitk_image(arr)))


def prepare_volume(image: np.ndarray, mask: np.ndarray, affine: np.ndarray, grid: str | GridSpec = "paper",
                   label: np.ndarray | None = None, around_brain: bool = False) -> PreparedVolume:
    """Bring one scan ([X, Y, Z] arrays, affine in mm) onto the model grid (see module docstring).

    ``around_brain``: crop around the brain mask's bounding box instead of the array centre (``detect``: a
    scan's result must not depend on its field of view); the published datasets keep the centred crop."""
    grid = get_grid(grid)
    if mask.shape != image.shape or (label is not None and label.shape != image.shape):
        raise MddpmError(f"image, mask and label shapes differ ({image.shape}, {mask.shape}, "
                         f"{None if label is None else label.shape})")
    spacing = voxel_sizes(affine)
    image = np.asarray(image, dtype=np.float32)
    if grid.curvature_flow:
        image = curvature_flow(image, spacing)
    crop_vox = tuple(int(round(c / s)) for c, s in zip(grid.crop_mm, spacing))
    start = brain_start(np.asarray(mask) > 0, crop_vox) if around_brain else None
    image, start = crop_or_pad(image, crop_vox, start)
    mask, _ = crop_or_pad(np.asarray(mask) > 0, crop_vox, start)
    image = normalise_percentiles(image, mask, grid.percentiles)

    factor = grid.spacing_mm / spacing
    size = grid.shape
    out_image = _resample(image, factor, size, sitk.sitkBSpline).astype(np.float32)
    out_mask = _resample(mask.astype(np.uint8), factor, size, sitk.sitkNearestNeighbor) > 0
    out_label = None
    if label is not None:
        label, _ = crop_or_pad(np.asarray(label) > 0, crop_vox, start)
        out_label = (_resample(label.astype(np.uint8), factor, size, sitk.sitkNearestNeighbor) > 0).astype(np.uint8)
        out_label = out_label.transpose(2, 0, 1).copy()
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(factor)
    index_map[:3, 3] = (factor - 1) / 2 + start
    return PreparedVolume(
        image=out_image.transpose(2, 0, 1).copy(),
        mask=out_mask.astype(np.uint8).transpose(2, 0, 1).copy(),
        label=out_label,
        affine=np.asarray(affine, dtype=np.float64) @ index_map,
    )


def to_original_space(arr: np.ndarray, prepared_affine: np.ndarray, shape: tuple[int, int, int],
                      affine: np.ndarray, order: int = 1) -> np.ndarray:
    """Resample a prepared ``[Z, H, W]`` array into a scan's own grid: ``[X, Y, Z]`` float32.

    ``order`` is the spline order (1 linear, 0 nearest for binary maps). Points within half a
    prepared voxel of the grid take the edge value; points further out are 0.
    """
    vol = np.asarray(arr, dtype=np.float32).transpose(1, 2, 0)  # [H, W, Z]
    coefficients = ndimage.spline_filter(vol, order, mode="nearest") if order > 1 else vol  # once, not per slice
    to_prepared = np.linalg.inv(prepared_affine) @ np.asarray(affine, dtype=np.float64)
    out = np.empty(shape, dtype=np.float32)
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    for k in range(shape[2]):  # one slice at a time keeps the coordinate arrays small
        idx = np.stack([ii, jj, np.full_like(ii, k), np.ones_like(ii)]).reshape(4, -1).astype(np.float64)
        coords = (to_prepared @ idx)[:3]
        inside = np.all((coords >= -0.5) & (coords <= np.array(vol.shape)[:, None] - 0.5), axis=0)
        values = ndimage.map_coordinates(coefficients, coords, order=order, mode="nearest", prefilter=False)
        out[:, :, k] = np.where(inside, values, 0).reshape(shape[:2])
    return out
