"""The checks a scan, a mask and an affine pass wherever they come from (a NIfTI file, the Python API): one
line naming the input and the problem, the same for the command line and the API."""

from __future__ import annotations

import numpy as np

from mddpm.errors import InputError

VOXEL_MM_RANGE = (0.05, 100.0)  # a voxel edge outside this is a broken header, not a scan


def check_affine(affine, where: str) -> np.ndarray:
    """A 4x4 voxel-to-world matrix in mm with finite entries, voxel edges in :data:`VOXEL_MM_RANGE` and
    independent axes; returned as float64."""
    try:
        affine = np.asarray(affine, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: the affine is not a 4x4 matrix of numbers") from None
    if affine.shape != (4, 4):
        raise InputError(f"{where}: the affine must be 4x4 (got shape {affine.shape})")
    if not np.isfinite(affine).all():
        raise InputError(f"{where}: the affine holds NaN or Inf entries")
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    lo, hi = VOXEL_MM_RANGE
    if not ((voxel >= lo).all() and (voxel <= hi).all()):
        raise InputError(f"{where}: degenerate affine: voxel size {tuple(round(float(v), 6) for v in voxel)} mm "
                         f"(each must lie in [{lo:g}, {hi:g}] mm)")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-6 * float(np.prod(voxel)):
        raise InputError(f"{where}: the affine is singular (its voxel axes are not independent)")
    return affine


def check_real(value, where: str) -> np.ndarray:
    """``value`` as a float32 array, refused unless its numbers are real (not complex, text or objects)."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise InputError(f"{where}: voxels of type {array.dtype} (expected real numbers)")
    return array.astype(np.float32, copy=False)


def check_binary_mask(mask: np.ndarray, where: str) -> np.ndarray:
    """A brain mask of 0 and 1 only, as bool."""
    if not np.isin(mask, (0, 1)).all():
        raise InputError(f"{where}: brain mask is not binary (values {np.unique(mask)[:6].tolist()}); "
                         "threshold it first (e.g. > 0.5)")
    return mask > 0


def check_memory(voxels: int, where: str, copies: int = 4) -> None:
    """Refuse a volume whose float32 arrays (``copies`` of them while it is processed) would not fit in the
    memory available now (Linux: MemAvailable; elsewhere not checked)."""
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return
    needed = voxels * 4 * copies
    if needed > available:
        raise InputError(f"{where}: {voxels} voxels need about {needed / 2**30:.1f} GB to process, "
                         f"{available / 2**30:.1f} GB of memory is available")
