"""Prepare a dataset once onto the model grid and cache it: every case through
:func:`mddpm.data.volume.prepare_volume` (the published online preprocessing), in worker processes, into
one cache folder (:mod:`mddpm.data.cache`) that is built aside and renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from mddpm.data.cache import CACHE_FILES, cache_damage, reuse_problem, saved_sources, source_fingerprint
from mddpm.data.dataset import load_dataset
from mddpm.data.grids import GridSpec, get_grid
from mddpm.data.verify import AFFINE_TOLERANCE_MM, odd_orientations
from mddpm.data.volume import CURVATURE_FLOW, PreparedVolume, prepare_volume
from mddpm.errors import DiskFull, MddpmError
from mddpm.io import build_folder, check_output_folder, missing_file, open_nifti, read_json, read_nifti, write_json
from mddpm.messages import note
from mddpm.parallel import parallel_map, sigterm_raises

PREPARE_VERSION = 1  # bump when the algorithm changes: older caches become stale


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
