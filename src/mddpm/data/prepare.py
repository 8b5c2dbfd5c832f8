"""Prepare a dataset once onto the model grid and cache it (the published online preprocessing).

Per volume, in the published order (protocol §1.4):

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

import contextlib
import errno
import hashlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from mddpm.data.cache import CACHE_FILES, cache_damage, reuse_problem, saved_sources, source_fingerprint
from mddpm.data.dataset import load_dataset
from mddpm.data.grids import GridSpec, get_grid
from mddpm.data.verify import AFFINE_TOLERANCE_MM, odd_orientations
from mddpm.errors import DiskFull, MddpmError
from mddpm.io import build_folder, check_output_folder, missing_file, open_nifti, read_json, read_nifti, write_json
from mddpm.messages import note
from mddpm.parallel import parallel_map, sigterm_raises

PREPARE_VERSION = 1  # bump when the algorithm changes: older caches become stale
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


def prepared_path(dataset_root: str | os.PathLike, grid: str | GridSpec = "paper",
                  cache: str | os.PathLike | None = None) -> Path:
    """Where :func:`prepare_dataset` puts the cache of ``grid``: ``<dataset_root>/prepared/<tag>`` by default;
    with ``cache`` (a folder outside a read-only or shared dataset), ``<cache>/<dataset folder name>-<8 hex
    digits of the SHA-256 of its absolute path>/<tag>``, so that one cache folder serves several datasets."""
    tag = get_grid(grid).tag
    if cache is None:
        return Path(dataset_root) / "prepared" / tag
    root = Path(dataset_root).resolve()
    key = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return Path(cache).resolve() / f"{root.name}-{key}" / tag


def _prepare_case(image_path: Path, mask_path: Path, label_path: Path | None, grid: GridSpec,
                  label_encoding: str = "binary"):
    """Worker: read one case's files and prepare them; errors name the file.

    With ``label_encoding`` "binary" a mask or label with values other than 0/1 is refused; with "gt0"
    (e.g. BraTS {1, 2, 4}) it is binarised with > 0.
    """
    image, affine = read_nifti(image_path)
    mask, mask_affine = read_nifti(mask_path)
    label, label_affine = read_nifti(label_path) if label_path is not None else (None, None)
    _check_binary(mask_path, mask, "brain mask", label_encoding)
    if label is not None:
        _check_binary(label_path, label, "label", label_encoding)
    for path, arr, arr_affine in ((mask_path, mask, mask_affine), (label_path, label, label_affine)):
        if arr is not None and arr.shape != image.shape:
            raise MddpmError(f"{path}: shape {arr.shape} differs from its image {image_path} {image.shape}")
        if arr is not None and np.abs(arr_affine - affine).max() > AFFINE_TOLERANCE_MM:
            raise MddpmError(f"{path}: affine differs from its image {image_path}'s by up to "
                             f"{np.abs(arr_affine - affine).max():.4g} mm")
    try:
        vol = prepare_volume(image, mask, affine, grid, label)
    except MddpmError as e:
        raise MddpmError(f"{image_path}: {e}") from None
    return vol


def _check_binary(path: Path, arr: np.ndarray, name: str, label_encoding: str) -> None:
    """As ``verify``: masks and labels hold 0/1 only ("binary"), or values >= 0 binarised with > 0 ("gt0")."""
    if label_encoding == "binary" and not np.isin(arr, (0, 1)).all():
        values = np.unique(arr)[:6].tolist()
        raise MddpmError(f"{path}: {name} is not binary (values {values}); set \"label_encoding\": \"gt0\" "
                         f"in dataset.json to binarise it with > 0")
    if arr.min() < 0:
        raise MddpmError(f"{path}: {name} has negative values (min {float(arr.min()):g})")


def _prepare_job(job: tuple) -> PreparedVolume:
    return _prepare_case(*job)


def _worker_init(threads: int) -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def prepare_dataset(dataset_root: str | os.PathLike, grid: str | GridSpec = "paper", force: bool = False,
                    workers: int = 2, progress: bool = True, cache: str | os.PathLike | None = None) -> Path:
    """Prepare every case of a dataset onto ``grid``; returns ``<dataset_root>/prepared/<tag>/`` (with
    ``cache``: a folder under ``cache``, see :func:`prepared_path`; nothing is then written in the dataset).

    The folder holds ``images.npy`` [N, Z, H, W] float32, ``masks.npy`` and ``labels.npy`` uint8,
    and ``prepared.json`` (grid, case ids, affines, source, dataset.json hash). An existing cache
    with the same settings and sources is reused as is; a stale one is rebuilt (and said so);
    ``force`` rebuilds regardless. The folder is built under a temporary name and renamed.
    ``workers > 1`` uses spawned processes: a calling script needs the ``if __name__ == "__main__":``
    guard. Call it from one process only (e.g. rank 0 before DDP starts).
    """
    grid = get_grid(grid)
    root = Path(dataset_root).resolve()
    ds = load_dataset(root)
    cases = list(ds.cases.values())
    if not cases:
        raise MddpmError(f"{root / 'dataset.json'}: no cases")
    sources = [p for c in cases for p in (c.image, c.mask, c.label) if p is not None]
    for p in sources:
        if not p.is_file():
            raise MddpmError(f"{p}: {missing_file(p)}")
    axes = ["".join(nib.aff2axcodes(open_nifti(c.image).affine)) for c in cases]  # headers only
    usual, odd = odd_orientations(axes)
    if odd:
        raise MddpmError(f"{cases[odd[0]].image}: voxel axes point {axes[odd[0]]}, most images of the dataset "
                         f"{usual} (reorient it like the others; `mddpm preprocess` does)")
    out = prepared_path(root, grid, cache)
    known = saved_sources(out)
    fingerprint, sources_record = source_fingerprint(sources, known)
    settings = {"prepare_version": PREPARE_VERSION, "grid": grid.settings(),
                "dataset_json_sha256": hashlib.sha256((root / "dataset.json").read_bytes()).hexdigest(),
                "files_fingerprint": fingerprint}
    if out.exists() and not force:
        problem = reuse_problem(out, settings)
        if problem is None:
            if sources_record != known:  # files touched but unchanged: record their times, not to hash again
                with contextlib.suppress(MddpmError, OSError):  # a read-only cache is still used
                    write_json(out / "prepared.json", {**read_json(out / "prepared.json"), "sources": sources_record})
            return out
        note(f"{out}: cache is {problem}; rebuilding")
    if out.exists():  # replaced below: only when it holds nothing but an earlier cache
        check_output_folder(out, True, CACHE_FILES)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MddpmError(f"{out.parent}: cannot create the cache folder ({e.strerror})") from None
    # SIGTERM, like Ctrl-C, removes the temporary folder on its way out
    with sigterm_raises(), build_folder(out) as tmp:
        affines = _build(tmp, out, cases, grid, workers, progress, ds.meta.get("label_encoding", "binary"))
        write_json(tmp / "prepared.json", {
            "grid": grid.settings(), "grid_tag": grid.tag,
            "case_ids": [c.id for c in cases], "affines": affines,
            "source": str(root), "dataset_json_sha256": settings["dataset_json_sha256"],
            "settings": {**settings, "curvature_flow": CURVATURE_FLOW, "interpolation": {
                "image": "cubic B-spline (SimpleITK sitkBSpline)", "mask": "nearest", "label": "nearest"},
                "simpleitk": sitk.Version.VersionString()},
            "sources": sources_record,
        })
        damage = cache_damage(tmp, read_volumes=True)
        if damage is not None:
            raise MddpmError(f"{out}: the new cache does not read back after writing (a full disk?): "
                             f"{damage.replace(str(tmp) + os.sep, '')}; nothing was replaced")
        if out.exists():
            old = tmp.with_name(tmp.name.removesuffix(".tmp") + "-old.tmp")  # removed by a later run if we die
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    return out


def _build(folder: Path, dest: Path, cases: list, grid: GridSpec, workers: int, progress: bool,
           label_encoding: str) -> list:
    """Write the three arrays into ``folder`` (renamed to ``dest`` afterwards); returns the per-case affines."""
    n, (h, w, z) = len(cases), grid.shape
    images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.float32, shape=(n, z, h, w))
    masks = np.lib.format.open_memmap(folder / "masks.npy", mode="w+", dtype=np.uint8, shape=(n, z, h, w))
    labels = np.lib.format.open_memmap(folder / "labels.npy", mode="w+", dtype=np.uint8, shape=(n, z, h, w))
    _allocate(folder, dest)
    affines = [None] * n

    def store(i: int, vol: PreparedVolume) -> None:
        images[i], masks[i], affines[i] = vol.image, vol.mask, vol.affine.tolist()  # noqa: F821 (del'd after use)
        labels[i] = vol.label if vol.label is not None else 0  # noqa: F821

    jobs = [(c.image, c.mask, c.label, grid, label_encoding) for c in cases]
    threads = max(1, (os.cpu_count() or 1) // max(1, min(workers, n)))
    parallel_map(_prepare_job, jobs, store, workers=workers, description=f"prepare {grid.tag}", progress=progress,
                 initializer=_worker_init, initargs=(threads,))
    for a in (images, masks, labels):
        a.flush()
    del images, masks, labels
    return affines


def _allocate(folder: Path, dest: Path) -> None:
    """Give the (sparse) arrays in ``folder`` their disk blocks now: on a full disk, writing a memory map
    is a SIGBUS; this is a :class:`~mddpm.errors.DiskFull` naming the cache ``dest`` and its size."""
    paths = sorted(folder.glob("*.npy"))
    needed = sum(p.stat().st_size for p in paths)
    for p in paths:
        fd = os.open(p, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, p.stat().st_size)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise DiskFull(dest, needed) from None
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without it: written as before
                raise
        finally:
            os.close(fd)
