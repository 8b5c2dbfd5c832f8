"""Check a dataset folder before anything is trained on it (``mddpm verify``).

:func:`check_dataset` reads ``dataset.json`` and every NIfTI file it names and reports every
problem it finds in one pass, not just the first. Each file is read once; cases are checked one at a
time (a few in parallel threads) and no volume is kept after its case is done, so memory stays at a
few volumes whatever the dataset size.

Severities:

* ``error``: the dataset cannot be used as it is (missing or unreadable file, shape or affine
  mismatch, not 3-D, NaN/Inf, empty brain mask, constant image, an image whose voxel axes point
  elsewhere than most images', non-binary labels under
  ``label_encoding: "binary"``, duplicate case id, a split naming an unknown case, an anomalous case
  without label, ...);
* ``warning``: probably a mistake, but the pipeline runs (negative intensities, a voxel size other than
  ``geometry.spacing_mm``, a case in two
  splits that should be disjoint, anomalous cases in a training split, an empty lesion label, ...);
* ``note``: worth knowing, nothing to fix (BraTS-style labels {0, 1, 2, 4} binarised with ``> 0``
  under ``label_encoding: "gt0"``, a healthy case that has a label, ...).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np

from mddpm.data.schema import MAX_LISTED, Entry, Problem, check_structure, listing
from mddpm.errors import MddpmError, first_line
from mddpm.io import missing_file, open_nifti

SEVERITIES = ("error", "warning", "note")
AFFINE_TOLERANCE_MM = 1e-3


@dataclass
class Verification:
    """The result of :func:`check_dataset`: all problems plus what was looked at."""

    root: Path
    problems: list[Problem] = field(default_factory=list)
    n_cases: int = 0
    n_files: int = 0  # NIfTI files read
    seconds: float = 0.0
    voxels: bool = True  # False: headers only, no value checks

    def count(self, severity: str) -> int:
        return sum(p.severity == severity for p in self.problems)

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings and notes allowed)."""
        return self.count("error") == 0

    def to_dict(self) -> dict:
        return {
            "dataset": str(self.root), "ok": self.ok,
            **{f"{s}s": self.count(s) for s in SEVERITIES},
            "cases": self.n_cases, "files_read": self.n_files, "voxels_checked": self.voxels,
            "seconds": round(self.seconds, 3),
            "problems": [asdict(p) for p in self.problems],
        }


def verify_dataset(root: str | os.PathLike, workers: int | None = None, voxels: bool = True) -> list[Problem]:
    """Every problem of the dataset at ``root`` (see :func:`check_dataset`)."""
    return check_dataset(root, workers=workers, voxels=voxels).problems


def check_dataset(
    root: str | os.PathLike,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    voxels: bool = True,
) -> Verification:
    """Check ``root/dataset.json`` and all files it names; never raises for bad input.

    ``workers`` threads read cases in parallel (default: up to 4); ``progress(done, total)`` is
    called after each case. ``voxels=False`` reads NIfTI headers only (existence, 3-D, shapes,
    affines, declared geometry; no value checks): a few milliseconds per file.
    """
    start = time.perf_counter()
    result = Verification(root=Path(root), voxels=voxels)
    problems = result.problems
    structure = check_structure(result.root)
    problems.extend(structure.problems)
    meta, entries, encoding = structure.meta, structure.entries, structure.encoding
    if meta is not None:
        where = str(result.root / "dataset.json")
        geometry = {} if any(p.code == "invalid-geometry" for p in problems) else meta.get("geometry", {})
        first: dict[str, Entry] = {}
        for e in entries:
            first.setdefault(e.id, e)  # files of a duplicated id are checked once, for its first entry
        unique = list(first.values())
        result.n_cases = len(unique)
        n_workers = max(1, workers or min(4, os.cpu_count() or 1))
        checks = []
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            for i, check in enumerate(pool.map(lambda e: _check_case(e, encoding, geometry, voxels), unique)):
                checks.append(check)
                if progress:
                    progress(i + 1, len(unique))
        for check in checks:
            problems.extend(check.problems)
            result.n_files += check.n_files
        _aggregate_notes(checks, encoding, where, problems)
        _check_orientations(checks, problems)
    result.seconds = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------- dataset.json



# ---------------------------------------------------------------------------- files of one case


@dataclass
class _CaseCheck:
    problems: list[Problem] = field(default_factory=list)
    n_files: int = 0
    label_values: set[float] = field(default_factory=set)  # non-{0,1} values accepted under gt0
    image: tuple[str, str, str] | None = None  # (case id, image path, axis codes such as "RAS")
    mask_values: set[float] = field(default_factory=set)


@dataclass
class _Volume:
    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray
    data: np.ndarray | None  # None when values cannot be trusted (NaN/Inf)


def _check_case(entry: Entry, encoding: str, geometry: dict, voxels: bool) -> _CaseCheck:
    out = _CaseCheck()

    def report(severity, code, path, message):
        out.problems.append(Problem(severity, code, str(path), message, entry.id))

    volumes: dict[str, _Volume | None] = {}
    for kind in ("image", "mask", "label"):
        path = getattr(entry, kind)
        if path is not None:
            volumes[kind] = _load(path, report, voxels)
            out.n_files += volumes[kind] is not None
    image, mask, label = volumes.get("image"), volumes.get("mask"), volumes.get("label")

    reference = image or mask
    for kind, vol in (("mask", mask), ("label", label)):
        if vol is None or reference is None or vol is reference:
            continue
        ref_name = "image" if reference is image else "mask"
        if vol.shape != reference.shape:
            report("error", "shape-mismatch", vol.path, f"{kind} shape {vol.shape} differs from the {ref_name}'s "
                                                        f"{reference.shape}")
        diff = float(np.abs(vol.affine - reference.affine).max())
        if diff > AFFINE_TOLERANCE_MM:
            report("error", "affine-mismatch", vol.path, f"{kind} affine differs from the {ref_name}'s by up to "
                                                         f"{diff:.4g} mm")

    brain = None
    if mask is not None and mask.data is not None:
        out.mask_values = _check_binary(mask, "brain mask", "mask", encoding, report)
        brain = mask.data > 0
        if not brain.any():
            report("error", "empty-mask", mask.path, "brain mask is empty")
            brain = None
    if image is not None:
        _check_geometry(image, geometry, report)
        out.image = (entry.id, str(image.path), "".join(nib.aff2axcodes(image.affine)))
    if image is not None and image.data is not None:
        _check_image(image, brain, report)
    if label is not None and label.data is not None:
        out.label_values = _check_binary(label, "label", "label", encoding, report)
        if entry.role == "anomalous" and not (label.data > 0).any():
            report("warning", "empty-label", label.path, "label of an anomalous case is empty (no lesion voxels)")
    return out


def _load(path: Path, report, voxels: bool) -> _Volume | None:
    """Read one NIfTI file (header, and voxels unless not ``voxels``, once); report and return
    None when unusable. ``.data`` is None when voxels were not read or cannot be trusted."""
    if not path.is_file():
        report("error", "missing-file", path, missing_file(path))
        return None
    try:
        img = open_nifti(path)
    except MddpmError as e:
        report("error", "unreadable", path, str(e).removeprefix(f"{path}: "))
        return None
    try:
        data = np.asanyarray(img.dataobj) if voxels else None
    except Exception as e:  # nibabel raises many types for broken or truncated files
        report("error", "unreadable", path, f"cannot read as NIfTI ({first_line(e)})")
        return None
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
        data = None if data is None else data[..., 0]
    if len(shape) != 3:
        report("error", "not-3d", path, f"not a 3-D image (shape {shape})")
        return None
    vol = _Volume(path, shape, np.asarray(img.affine, dtype=np.float64), data)
    if data is None:
        return vol
    if np.issubdtype(data.dtype, np.floating):
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            report("error", "non-finite", path, f"{bad} of {data.size} voxels are NaN or Inf")
            vol.data = None
    elif not np.issubdtype(data.dtype, np.integer) and data.dtype != np.bool_:
        report("error", "unreadable", path, f"unsupported voxel type {data.dtype}")
        vol.data = None
    return vol


def _check_image(image: _Volume, brain: np.ndarray | None, report) -> None:
    """Constant image (everywhere or inside the brain): error; negative intensities: warning."""
    data = image.data
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        report("error", "constant-image", image.path, f"image is constant (every voxel is {lo:g})")
    elif brain is not None and brain.shape == data.shape:
        inside = data[brain]
        if float(inside.min()) == float(inside.max()):
            report("error", "constant-image", image.path, "image is constant inside the brain mask "
                                                          f"({float(inside.min()):g})")
    if lo < 0:
        n = int(np.count_nonzero(data < 0))
        report("warning", "negative-values", image.path, f"{n} voxels are negative (min {lo:g})")


def _check_geometry(image: _Volume, geometry: dict, report) -> None:
    """Warn when the image's shape or voxel size differs from dataset.json's ``geometry``."""
    shape, spacing = geometry.get("shape"), geometry.get("spacing_mm")
    if isinstance(shape, list) and len(shape) == 3 and tuple(shape) != image.shape:
        report("warning", "geometry-shape", image.path, f"shape {image.shape} differs from geometry.shape "
                                                        f"{tuple(shape)}")
    if isinstance(spacing, list) and len(spacing) == 3:
        voxel = np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0))
        if np.abs(voxel - np.asarray(spacing, dtype=float)).max() > AFFINE_TOLERANCE_MM:
            report("warning", "geometry-spacing", image.path,
                   f"voxel size {tuple(round(float(v), 4) for v in voxel)} mm differs from geometry.spacing_mm "
                   f"{tuple(spacing)}")


def _check_binary(vol: _Volume, name: str, code: str, encoding: str, report) -> set[float]:
    """Report non-{0,1} values; return those accepted under ``gt0`` (binarised with > 0)."""
    data = vol.data
    binary = (data == 0) | (data == 1)
    if binary.all():
        return set()
    others = np.unique(data[~binary])
    shown = ", ".join(f"{float(v):g}" for v in others[:MAX_LISTED]) + (", ..." if len(others) > MAX_LISTED else "")
    if encoding == "binary":
        report("error", f"{code}-not-binary", vol.path,
               f"{name} is not binary (also holds {shown}); set label_encoding to 'gt0' if values > 0 mean foreground")
        return set()
    if others.min() < 0:
        report("error", f"{code}-negative", vol.path, f"{name} has negative values ({shown})")
        return set()
    return {float(v) for v in others[:MAX_LISTED]}


def odd_orientations(axes: list[str]) -> tuple[str, list[int]]:
    """``(the most common axis codes, indices of the images whose codes differ)``: prepare keeps each file's
    voxel axes, so an image stored permuted or flipped would reach the model rotated."""
    usual = max(set(axes), key=axes.count) if axes else ""
    return usual, [i for i, a in enumerate(axes) if a != usual]


def _check_orientations(checks: list[_CaseCheck], problems: list[Problem]) -> None:
    images = [c.image for c in checks if c.image is not None]
    usual, odd = odd_orientations([a for _, _, a in images])
    for i in odd:
        cid, path, axes = images[i]
        problems.append(Problem("error", "orientation", path, f"voxel axes point {axes}, most images' {usual} "
                                "(reorient it like the others; `mddpm preprocess` does)", cid))


def _aggregate_notes(checks: list[_CaseCheck], encoding: str, where: str, problems: list[Problem]) -> None:
    """One note per kind of accepted non-binary values, instead of one per file."""
    for attr, name in (("label_values", "labels"), ("mask_values", "brain masks")):
        sets = [getattr(c, attr) for c in checks if getattr(c, attr)]
        if sets:
            values = sorted(set().union(*sets))
            problems.append(Problem("note", attr.replace("_", "-"), where,
                                    f"{len(sets)} {name} hold values other than 0 and 1 "
                                    f"({listing([f'{v:g}' for v in values])}); "
                                    f"binarised with > 0 (label_encoding {encoding!r})"))
