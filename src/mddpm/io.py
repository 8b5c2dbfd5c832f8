"""Reading and writing files safely: NIfTI volumes, JSON, and atomic writes.

Every writer goes through :func:`atomic_write`: the content is written under a temporary
name in the destination folder and renamed into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator

import nibabel as nib
import numpy as np

from mddpm.checks import check_affine, check_memory
from mddpm.errors import DiskFull, MddpmError, first_line
from mddpm.folder_lock import LOCK_NAME, process_alive
from mddpm.messages import note


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
    try:
        yield tmp
        if tmp.is_file():  # mkstemp makes 0600 files: give the result the usual permissions
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DiskFull(path) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def check_new_output(path: str | os.PathLike, force: bool) -> Path:
    """Refuse to overwrite an existing output unless ``force``; return the path."""
    path = Path(path)
    if path.exists() and not force and (not path.is_dir() or _files_under(path)):
        raise MddpmError(f"{path}: already exists (use --force to overwrite)")
    return path


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


@contextlib.contextmanager
def build_folder(out: Path) -> Iterator[Path]:
    """A new folder beside ``out`` to build it in (then renamed to ``out`` by the caller), removed on the way
    out if still there. It is named ``.<out's name>.<host>.<pid>.<random>.tmp`` and made with the permissions
    the umask gives (not mkdtemp's 0700). Such folders of ``out`` left by a dead process of this machine (one
    killed outright) are removed first, saying so."""
    stale = re.compile(re.escape(f".{out.name}.{_HOST}.") + r"(\d+)\.[\w-]+\.tmp")
    for entry in sorted(out.parent.iterdir()) if out.parent.is_dir() else []:
        found = stale.fullmatch(entry.name)
        if found and entry.is_dir() and not entry.is_symlink() and not process_alive(int(found.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            note(f"{entry}: removed, the temporary folder of a process that ended (pid {found.group(1)})")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{_HOST}.{os.getpid()}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


MAX_ID_LENGTH = 128
# what atomic_write and build_folder leave behind when a process is killed: ours wherever it lies
_TEMP_PATTERNS = ("**/.*.tmp*", "**/.*.tmp/**")


def case_id_problem(cid, kind: str = "case ids") -> str | None:
    """Why ``cid`` cannot be a case id (ids become file names: one safe path component), or None. The same
    rule holds for every other name that becomes a file name (``kind``: what the message calls them)."""
    if not isinstance(cid, str) or not cid:
        reason = "is not a non-empty string"
    elif len(cid) > MAX_ID_LENGTH:
        reason = f"is longer than {MAX_ID_LENGTH} characters"
    elif cid.startswith(("/", "\\")):
        reason = "is an absolute path"
    elif "/" in cid or "\\" in cid:
        reason = "holds a path separator"
    elif cid.startswith("."):
        reason = "starts with a dot"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in cid):
        reason = "holds a control character"
    else:
        return None
    return f"{reason} ({kind} become file names)"


def check_case_id(cid, where: str | os.PathLike) -> str:
    """``cid`` if it is a safe case id, else :class:`MddpmError` naming ``where`` (the file that holds it)."""
    problem = case_id_problem(cid)
    if problem:
        raise MddpmError(f"{where}: case id {cid!r} {problem}")
    return cid


def case_file(folder: Path, cid: str, suffix: str, under: str = "") -> Path:
    """``folder/[under/]<cid><suffix>``; refused unless ``cid`` is a safe id and the path stays inside
    ``folder`` (no traversal, no symlink leading out)."""
    path = folder / under / (check_case_id(cid, folder) + suffix)
    if not path.resolve().is_relative_to(folder.resolve()):
        raise MddpmError(f"{path}: resolves outside the folder {folder}")
    return path


def check_output_folder(out: Path, force: bool, owned: Iterable[str]) -> list[Path]:
    """Check that folder ``out`` may take a command's outputs; return the earlier outputs to remove.

    ``owned``: patterns (relative to ``out``, :func:`matches`) of the files the command writes or, per its
    manifest, wrote before. A missing or empty folder is fine. Otherwise it is refused without ``force``, and
    with ``force`` when it holds a file no pattern matches (never deleted).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MddpmError(f"{out}: exists and is not a folder")
    files = _files_under(out) if out.is_dir() else []
    if not files:
        return []
    if not force:
        raise MddpmError(f"{out}: already exists (use --force to overwrite)")
    patterns = [*owned, *_TEMP_PATTERNS]
    foreign = [f for f in files if not matches(f, patterns)]
    if foreign:
        raise MddpmError(f"{out}: holds {len(foreign)} file(s) mddpm did not write there (e.g. {foreign[0]}); "
                         "--force replaces only its own outputs: choose another folder or move them")
    return [out / f for f in files]


def matches(path: str, patterns: Iterable[str]) -> bool:
    """Whether ``path`` (relative, ``/`` between folders) matches one of ``patterns`` folder by folder: ``*``
    and ``?`` stay within one name (``figures/*.png`` is no ``figures/mine/a.png``); a ``**`` part stands for
    any number of folders (``logs/wandb/**``: everything below ``logs/wandb``)."""
    return any(_match(path.split("/"), pattern.split("/")) for pattern in patterns)


def _match(parts: list[str], pattern: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":  # at the end it needs one name at least: the folder itself is not below it
        first = 1 if len(pattern) == 1 else 0
        return any(_match(parts[i:], pattern[1:]) for i in range(first, len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match(parts[1:], pattern[1:])


def refuse_links(folder: Path, owned: Iterable[str]) -> None:
    """Refuse ``folder`` when a symbolic link stands where a command writes (a file of ``owned`` or a folder on
    the way to them): what is written through it would land outside ``folder``."""
    owned = list(owned)
    for f in _files_under(folder) if folder.is_dir() else []:
        if (folder / f).is_symlink() and (matches(f, owned) or any(_leads_to(f, p) for p in owned)):
            raise MddpmError(f"{folder / f}: a symbolic link where mddpm writes (it would write outside {folder}); "
                             "replace it with what it points to")


def _leads_to(path: str, pattern: str) -> bool:
    """Whether the folder ``path`` is on the way to the files of ``pattern`` (its first names match)."""
    parts, head = path.split("/"), pattern.split("/")
    return len(head) > len(parts) and "**" not in head[:len(parts)] and _match(parts, head[:len(parts)])


def clear_outputs(out: Path, files: list[Path]) -> None:
    """Delete ``files`` (from :func:`check_output_folder`) and the folders under ``out`` they leave empty."""
    folders = set()
    for f in files:
        f.unlink(missing_ok=True)
        folders.update(p for p in f.parents if p != out and p.is_relative_to(out))
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty: it holds something else
            folder.rmdir()


@contextlib.contextmanager
def all_or_nothing(out: Path) -> Iterator[None]:
    """The files the block writes under ``out`` are removed again when it fails (a full disk half-way leaves
    no half output)."""
    def folders() -> set[Path]:
        return {Path(top) for top, _, _ in os.walk(out)} if out.is_dir() else set()

    before, had = set(_files_under(out)) if out.is_dir() else set(), folders()
    try:
        yield
    except BaseException:
        clear_outputs(out, [out / f for f in (_files_under(out) if out.is_dir() else []) if f not in before])
        for folder in sorted(folders() - had, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty: it holds something else
                folder.rmdir()
        raise


def _files_under(folder: Path) -> list[str]:
    """Relative paths of the files (and symlinks, never followed) under ``folder``; a writer's lock at its top
    (:mod:`mddpm.folder_lock`) is not an output."""
    found = []
    for top, dirs, files in os.walk(folder):
        rel = Path(top).relative_to(folder)
        found += [(rel / n).as_posix() for n in files]
        found += [(rel / d).as_posix() for d in dirs if (Path(top) / d).is_symlink()]
    return sorted(f for f in found if f != LOCK_NAME)


def missing_file(path: Path) -> str:
    """Why ``path`` (which is no file) cannot be read: a dangling or looping link, a folder, or nothing there."""
    if path.is_symlink():
        return "a symbolic link that leads nowhere (dangling, or a loop)"
    return "a folder, not a file" if path.is_dir() else "file not found"


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


_SHA_CACHE: dict[tuple, str] = {}
RACY_NS = 2 * 10**9  # a file changed this recently could change again within the same clock tick


def file_stamp(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """``(size, mtime_ns, ctime_ns)``, which an edit always changes (``touch -r``, ``cp -p``, ``rsync -a`` set the
    mtime back, nothing sets back the ctime); None for a file changed in the last :data:`RACY_NS`."""
    st = os.stat(path)
    return None if time.time_ns() - st.st_ctime_ns < RACY_NS else (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks; remembered per path and :func:`file_stamp`."""
    path = Path(path)
    key = (str(path.resolve()), file_stamp(path))
    if key[1] is None or key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object from ``path``; anything else (a list, nesting too deep, bad bytes) is refused."""
    path = Path(path)
    if not path.is_file():
        raise MddpmError(f"{path}: {missing_file(path)}")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MddpmError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise MddpmError(f"{path}: JSON nested too deeply") from None
    except OSError as e:
        raise MddpmError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(obj, dict):
        raise MddpmError(f"{path}: not a JSON object (found a {type(obj).__name__})")
    return obj


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


MAX_VOXELS = 2**30  # 1024^3: far beyond any brain scan; bounds the memory a header can make us allocate
GZIP_MAX_RATIO = 1100  # deflate cannot compress better than about 1032:1


def open_nifti(path: str | os.PathLike):
    """The nibabel image of ``path``, its header checked (:func:`check_nifti_header`); no voxel read yet."""
    path = Path(path)
    if not path.is_file():
        raise MddpmError(f"{path}: {missing_file(path)}")
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises many types for broken files
        raise MddpmError(f"{path}: cannot read as NIfTI ({first_line(e)})") from None
    check_nifti_header(img, path)
    return img


def check_nifti_header(img, path: Path) -> None:
    """Refuse a header before any allocation: a claimed size beyond :data:`MAX_VOXELS` or beyond what the
    file can hold, a voxel type that is not real numbers, a degenerate affine (voxel size 0, NaN, absurd)."""
    shape = tuple(int(s) for s in img.shape)
    voxels = int(np.prod(shape, dtype=np.float64)) if shape else 0
    dtype = img.get_data_dtype()
    if dtype.kind not in "biuf":
        raise MddpmError(f"{path}: unsupported voxel type {dtype} (expected real numbers)")
    claimed = voxels * dtype.itemsize
    size = path.stat().st_size
    room = size * GZIP_MAX_RATIO if path.name.endswith(".gz") else size
    if voxels > MAX_VOXELS or claimed > room:
        raise MddpmError(f"{path}: header claims {voxels} voxels of {dtype} ({claimed / 1e9:.3g} GB) "
                         f"in a {size}-byte file (a corrupt or lying header)")
    check_affine(img.affine, str(path))
    check_memory(voxels, str(path))


def read_nifti(path: str | os.PathLike, *, finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3-D NIfTI file: (array [X, Y, Z] float32, affine [4, 4] float64, mm).

    A trailing singleton 4th axis is dropped. Raises :class:`MddpmError` naming the file for a
    missing, unreadable, truncated, non-3-D, bad-header (:func:`check_nifti_header`) or (with
    ``finite``) NaN/Inf-containing image.
    """
    path = Path(path)
    img = open_nifti(path)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except MemoryError:
        raise MddpmError(f"{path}: not enough memory to read {img.shape} voxels") from None
    except Exception as e:  # nibabel raises many types for broken files
        raise MddpmError(f"{path}: cannot read as NIfTI ({first_line(e)})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise MddpmError(f"{path}: not a 3-D image (shape {tuple(data.shape)})")
    if finite and not np.isfinite(data).all():
        raise MddpmError(f"{path}: contains NaN or Inf voxels ({int((~np.isfinite(data)).sum())} of {data.size})")
    return data, np.asarray(img.affine, dtype=np.float64)


NIFTI_XFORM_SCANNER = 1  # "scanner-based anatomical coordinates": world positions in mm


def xform_codes(path: str | os.PathLike) -> tuple[int, int]:
    """``(qform_code, sform_code)`` of a NIfTI file's header (e.g. 4: MNI-152 space)."""
    header = open_nifti(path).header
    return int(header["qform_code"]), int(header["sform_code"])


def write_nifti(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray,
                codes: tuple[int, int] | None = None) -> None:
    """Write a 3-D array with its affine as NIfTI (gzip if the name ends in .gz), atomically; the affine is
    stored as both qform and sform (code 1, scanner, or ``codes`` = (qform code, sform code), e.g. those of
    the scan it was computed from), units mm and s, so every viewer places it alike."""
    affine = np.asarray(affine, dtype=np.float64)
    qform_code, sform_code = codes if codes is not None else (NIFTI_XFORM_SCANNER, NIFTI_XFORM_SCANNER)
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.set_qform(affine, code=int(qform_code))
    img.set_sform(affine, code=int(sform_code))
    img.header.set_xyzt_units("mm", "sec")
    with atomic_write(path) as tmp:
        nib.save(img, str(tmp))
