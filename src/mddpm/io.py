"""Reading and writing files safely: NIfTI volumes, JSON, and atomic writes.

Every writer goes through :func:`atomic_write`: the content is written under a temporary
name in the destination folder and renamed into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np

from mddpm.errors import MddpmError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MddpmError(f"{path.parent}: cannot create folder ({e.strerror})") from None
    if not os.access(path.parent, os.W_OK):
        raise MddpmError(f"{path.parent}: folder is not writable")
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        if tmp.is_file():  # mkstemp makes 0600 files: give the result the usual permissions
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_new_output(path: str | os.PathLike, force: bool) -> Path:
    """Refuse to overwrite an existing output unless ``force``; return the path."""
    path = Path(path)
    if path.exists() and not force and (not path.is_dir() or any(path.iterdir())):
        raise MddpmError(f"{path}: already exists (use --force to overwrite)")
    return path


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MddpmError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MddpmError(f"{path}: not valid JSON ({e})") from None


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_nifti(path: str | os.PathLike, *, finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3-D NIfTI file: (array [X, Y, Z] float32, affine [4, 4] float64, mm).

    A trailing singleton 4th axis is dropped. Raises :class:`MddpmError` naming the file for a
    missing, unreadable, truncated, non-3-D or (with ``finite``) NaN/Inf-containing image.
    """
    path = Path(path)
    if not path.is_file():
        raise MddpmError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # nibabel raises many types for broken files
        raise MddpmError(f"{path}: cannot read as NIfTI ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise MddpmError(f"{path}: not a 3-D image (shape {tuple(data.shape)})")
    if finite and not np.isfinite(data).all():
        raise MddpmError(f"{path}: contains NaN or Inf voxels ({int((~np.isfinite(data)).sum())} of {data.size})")
    return data, np.asarray(img.affine, dtype=np.float64)


def write_nifti(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray) -> None:
    """Write a 3-D array with its affine as NIfTI (gzip if the name ends in .gz), atomically."""
    img = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64))
    with atomic_write(path) as tmp:
        nib.save(img, str(tmp))
