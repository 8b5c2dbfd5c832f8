"""The prepared cache as read back: ``images.npy`` [N, Z, H, W] float32, ``masks.npy`` and ``labels.npy``
uint8, ``prepared.json`` (case ids, affines, settings), written by :func:`mddpm.data.prepare.prepare_dataset`.

Every problem found in a cache (a missing or truncated array, a malformed ``prepared.json``) is one line;
the readers of a cache (:func:`load_prepared`) end it in :data:`REBUILD`: a damaged cache is rebuilt, never
repaired (``prepare`` itself rebuilds a damaged cache it finds, and reads back every cache it writes).
A cache is stale when a byte of its sources changed (:func:`source_fingerprint`), whatever their times say.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mddpm.errors import MddpmError
from mddpm.io import file_sha256, file_stamp, read_json

ARRAYS = ("images", "masks", "labels")
CACHE_FILES = ("prepared.json", *(f"{name}.npy" for name in ARRAYS))  # what a cache folder holds
REBUILD = "a damaged cache: run `mddpm prepare --force`"
STAMP_KEYS = ("prepare_version", "grid", "dataset_json_sha256", "files_fingerprint")


@dataclass
class Prepared:
    """A prepared cache folder; arrays are memory-mapped ``[N, Z, H, W]``."""

    folder: Path
    meta: dict
    case_ids: list[str]
    images: np.ndarray  # float32
    masks: np.ndarray  # uint8
    labels: np.ndarray  # uint8 (zeros for healthy cases)
    affines: np.ndarray  # [N, 4, 4] float64

    def index(self, case_id: str) -> int:
        try:
            return self._index[case_id]
        except KeyError:
            raise MddpmError(f"{self.folder}: no case {case_id!r} in the prepared cache") from None

    def volume(self, case_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, mask, label) of one case, each [Z, H, W], copied into memory through a short-lived
        map, so that streaming over many volumes keeps no pages of the cache resident."""
        i = self.index(case_id)
        return tuple(np.array(np.load(self.folder / f"{name}.npy", mmap_mode="r")[i]) for name in ARRAYS)

    def __post_init__(self):
        self._index = {c: i for i, c in enumerate(self.case_ids)}


def check_array_file(path: Path) -> None:
    """Refuse a ``.npy`` file that is missing, has no valid header, or whose size differs from what its
    header promises (a truncated or overwritten cache)."""
    if not path.is_file():
        raise MddpmError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            expected = f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            size = os.fstat(f.fileno()).st_size
    except (ValueError, OSError) as e:
        raise MddpmError(f"{path}: not a readable array ({e})") from None
    if size != expected:
        raise MddpmError(f"{path}: {size} bytes where its header announces {expected}")


def load_prepared(folder: str | os.PathLike) -> Prepared:
    """Open a folder written by :func:`~mddpm.data.prepare.prepare_dataset` (arrays memory-mapped,
    read-only); a damaged cache is one line that says to run ``mddpm prepare --force``."""
    try:
        return open_cache(Path(folder))
    except MddpmError as e:
        raise MddpmError(f"{e} ({REBUILD})") from None


def open_cache(folder: Path) -> Prepared:
    """:func:`load_prepared` without the advice (for ``prepare``, which rebuilds instead)."""
    meta = read_json(folder / "prepared.json")
    arrays = {}
    for name in ARRAYS:
        path = folder / f"{name}.npy"
        check_array_file(path)
        try:
            arrays[name] = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as e:
            raise MddpmError(f"{path}: cannot read ({e})") from None
    case_ids, affines = meta.get("case_ids"), meta.get("affines")
    n = len(case_ids) if isinstance(case_ids, list) else 0
    try:
        affines = np.asarray(affines, dtype=np.float64)
    except (TypeError, ValueError):
        affines = np.zeros(0)
    if not n or not all(isinstance(c, str) for c in case_ids) or affines.shape != (n, 4, 4):
        raise MddpmError(f"{folder / 'prepared.json'}: no list of case ids with one 4x4 affine each")
    shapes = {name: a.shape for name, a in arrays.items()}
    if any(len(s) != 4 or s[0] != n for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise MddpmError(f"{folder}: array shapes {shapes} do not match {n} cases")
    return Prepared(folder=folder, meta=meta, case_ids=case_ids, affines=affines, **arrays)


def cache_damage(folder: Path, read_volumes: bool = False) -> str | None:
    """Why the cache in ``folder`` cannot be used (its first problem, one line), or None. With
    ``read_volumes`` also reads every volume: each must hold a non-empty brain mask and a non-constant
    image (what prepare guarantees), so that a region never written (a sparse file) shows."""
    try:
        prepared = open_cache(folder)
    except MddpmError as e:
        return str(e)
    for i, cid in enumerate(prepared.case_ids if read_volumes else []):
        if not prepared.masks[i].any() or np.ptp(prepared.images[i]) == 0:
            return f"{folder}: case {cid!r} was not written completely"
    return None


def source_fingerprint(paths: list[Path], known: dict) -> tuple[str, dict]:
    """``(fingerprint, record)``: a hash over the sources' paths and contents, and the per-file record
    ``{path: {"stamp": [size, mtime_ns, ctime_ns], "sha256": ...}}`` kept with the cache. A file whose
    :func:`~mddpm.io.file_stamp` (ctime included: an edit always changes it) is the one in ``known`` (the
    record of the cache in place) keeps its recorded hash; any other file is read."""
    h, record = hashlib.sha256(), {}
    for p in paths:
        stamp, old = file_stamp(p), known.get(str(p))
        same = (stamp is not None and isinstance(old, dict) and old.get("stamp") == list(stamp)
                and isinstance(old.get("sha256"), str))
        record[str(p)] = {"stamp": None if stamp is None else list(stamp),
                          "sha256": old["sha256"] if same else file_sha256(p)}
        h.update(f"{p}\0{record[str(p)]['sha256']}\n".encode())
    return h.hexdigest(), record


def saved_sources(folder: Path) -> dict:
    """The per-file record of the cache in ``folder`` (:func:`source_fingerprint`); empty when there is none."""
    try:
        sources = read_json(folder / "prepared.json").get("sources")
    except MddpmError:
        return {}
    return sources if isinstance(sources, dict) else {}


def reuse_problem(folder: Path, settings: dict) -> str | None:
    """Why the cache in ``folder`` cannot be reused for ``settings`` (:data:`STAMP_KEYS`): stale or damaged."""
    try:
        saved = read_json(folder / "prepared.json").get("settings", {})
    except MddpmError:
        saved = {}
    if not isinstance(saved, dict) or any(saved.get(k) != settings[k] for k in STAMP_KEYS):
        return "stale (settings or source files changed)"
    damage = cache_damage(folder)
    return None if damage is None else f"damaged ({damage})"
