"""Import the preprocessed data of pDDPM/mDDPM (``mddpm import-pddpm DATA_DIR OUT``).

The released code reads split CSVs and preprocessed T2 volumes from this layout (its data loaders and
``preprocessing/`` scripts)::

    <DATA_DIR>/Data/splits/{IXI_train_fold0..4,IXI_val_fold0..4,IXI_test,Brats21_val,Brats21_test,
                            MSLUB_val,MSLUB_test,avail_t2}.csv
    <DATA_DIR>/Data/Train/ixi/{t2,mask}/IXI<id>_{t2,mask}.nii.gz
    <DATA_DIR>/Data/Test/Brats21/{t2,mask,seg}/BraTS2021_<id>_{t2,mask,seg}.nii.gz
    <DATA_DIR>/Data/Test/MSLUB/{t2,mask,seg}/patient<NN>_{t2,mask,seg}.nii.gz

:func:`import_pddpm` writes ``OUT/dataset.json`` that references these files in place by absolute
path (nothing is copied). What it does with the CSVs, and where it differs from the released code:

* IXI rows are kept only when their T2 name is in ``avail_t2.csv`` (column ``0``), as the code does.
* ``img_path`` is written for T1; its ``t1`` folder and ``_t1`` suffix become ``t2``. The code
  replaces the substring ``t1`` in the whole path (after prefixing DATA_DIR, so a DATA_DIR containing
  "t1" breaks it); here only the CSV path is rewritten. Same result on the released CSVs.
* MSLUB: the released mDDPM code rewrites ``uniso/t1`` (never present) and the ``t1.nii.gz`` suffix,
  so it points at ``Test/MSLUB/t1/patientNN_t2.nii.gz``, which does not exist. Here MSLUB gets the
  same rewrite as the other sets: ``Test/MSLUB/t2/patientNN_t2.nii.gz``.
* Mask and seg paths are used as written. Labels are binarised with ``> 0``
  (``label_encoding: "gt0"``): BraTS {1, 2, 4} becomes the whole tumour.
* Duplicate rows: some CSVs list a subject twice (IXI_train_fold0: 385 rows after the T2 filter, 372
  subjects). The released code keeps duplicate rows, so those subjects are drawn twice as often.
  Here each subject is one case and each split lists it once; the duplicate counts are recorded in
  the provenance. A subject in several CSVs (IXI_test shares 9 subjects with fold-0 train) is one
  case that several splits name; ``mddpm verify`` warns about such overlaps.

Splits: ``folds[k]`` = IXI_train_fold{k} / IXI_val_fold{k}; ``train``/``val`` = fold 0;
``test`` = IXI_test; ``brats21_val``, ``brats21_test``, ``mslub_val``, ``mslub_test``.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from mddpm._version import __version__
from mddpm.data.dataset import save_dataset_json
from mddpm.errors import MddpmError
from mddpm.folder_lock import writes_folder
from mddpm.io import check_case_id, check_new_output

AVAIL_T2_CSV = "avail_t2"
IXI_TEST = ("IXI_test", "test")
EVAL_SETS = [  # (CSV stem, split name, group)
    ("Brats21_val", "brats21_val", "brats21"), ("Brats21_test", "brats21_test", "brats21"),
    ("MSLUB_val", "mslub_val", "mslub"), ("MSLUB_test", "mslub_test", "mslub"),
]
_NAME_SUFFIX = re.compile(r"(_t[12])?(\.nii(\.gz)?)?$")
_T1_SUFFIX = re.compile(r"_t1(\.nii(\.gz)?)$")

SOURCE_PREPROCESSING = {  # what the released scripts did to the files (docs/preprocess.md); not re-run here
    "scripts": "preprocessing/prepare_{IXI,Brats21,MSLUB}.sh of pDDPM/mDDPM",
    "resample": "1.0 mm isotropic, B-spline (not BraTS, already 1 mm), reoriented to RAI",
    "skull_strip": "HD-BET (IXI, MSLUB); ants.get_mask on the T2 (BraTS)",
    "registration": "ANTsPy affine to the SRI24 T1 template; masks and segs warped linearly",
    "cut": "brain bounding box (upper bound exclusive)",
    "bias_correction": "N4 (BraTS: unmasked)",
}


@dataclass
class CsvCount:
    """Rows of one split CSV: as read, after the T2 filter (IXI), unique subjects."""

    csv: str
    split: str
    rows: int
    after_t2_filter: int
    unique: int

    @property
    def duplicates(self) -> int:
        return self.after_t2_filter - self.unique


@dataclass
class PddpmImport:
    """The dataset.json content (without format stamp) and what the import found on the way."""

    data_root: Path  # the Data folder
    meta: dict
    counts: list[CsvCount] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # one line per missing file: "<path>: file not found (...)"
    dropped: list[str] = field(default_factory=list)  # case ids left out with drop_missing


def find_data_root(data_dir: str | os.PathLike) -> Path:
    """``DATA_DIR/Data`` or ``DATA_DIR`` itself, whichever holds ``splits/``; absolute."""
    data_dir = Path(os.path.abspath(data_dir))
    for candidate in (data_dir / "Data", data_dir):
        if (candidate / "splits").is_dir():
            return candidate
    raise MddpmError(f"{data_dir}: no Data/splits folder (expected the pDDPM layout <DATA_DIR>/Data/splits/*.csv)")


def read_pddpm(data_dir: str | os.PathLike, drop_missing: bool = False) -> PddpmImport:
    """Read the split CSVs under ``data_dir`` and build the dataset description.

    Missing files are listed in ``.missing`` (their cases stay in, or with ``drop_missing`` are
    left out of cases, splits and folds). Unreadable CSVs or missing columns raise MddpmError.
    """
    data_root = find_data_root(data_dir)
    splits_dir = data_root / "splits"
    rows = _read_csv(splits_dir / f"{AVAIL_T2_CSV}.csv", ["0"])
    avail = {name.replace("t2", "t1") for name in (r["0"] for r in rows)}
    n_folds = 0
    while (splits_dir / f"IXI_train_fold{n_folds}.csv").is_file():
        n_folds += 1
    if n_folds == 0:
        raise MddpmError(f"{splits_dir / 'IXI_train_fold0.csv'}: file not found")

    cases: dict[str, dict] = {}
    origin: dict[str, str] = {}  # case id -> first CSV naming it
    counts: list[CsvCount] = []

    def add_csv(stem: str, split: str, group: str) -> list[str]:
        path = splits_dir / f"{stem}.csv"
        healthy = group == "ixi"
        rows = _read_csv(path, ["img_name", "img_path", "mask_path"] + ([] if healthy else ["seg_path"]))
        kept = [(n, r) for n, r in enumerate(rows, start=1) if not healthy or r["img_name"] in avail]
        ids: list[str] = []
        for number, row in kept:
            case = _case_from_row(row, data_root, group, path, number)
            if case["id"] in cases:
                if _paths(cases[case["id"]]) != _paths(case):
                    raise MddpmError(f"{path}: case {case['id']!r} has other paths than in {origin[case['id']]}.csv")
            else:
                cases[case["id"]], origin[case["id"]] = case, stem
            ids.append(case["id"])
        unique = list(dict.fromkeys(ids))
        counts.append(CsvCount(stem, split, len(rows), len(kept), len(unique)))
        return unique

    folds = []
    for k in range(n_folds):
        train = add_csv(f"IXI_train_fold{k}", f"fold {k} train", "ixi")
        if not (splits_dir / f"IXI_val_fold{k}.csv").is_file():
            raise MddpmError(f"{splits_dir / f'IXI_val_fold{k}.csv'}: file not found (IXI_train_fold{k}.csv has no val "
                             "partner)")
        folds.append({"train": train, "val": add_csv(f"IXI_val_fold{k}", f"fold {k} val", "ixi")})
    splits = {"train": folds[0]["train"], "val": folds[0]["val"], IXI_TEST[1]: add_csv(IXI_TEST[0], IXI_TEST[1], "ixi")}
    for stem, split, group in EVAL_SETS:
        splits[split] = add_csv(stem, split, group)

    missing, broken = [], set()
    for cid, case in cases.items():
        for key in ("image", "mask", "label"):
            if case[key] is not None and not os.path.isfile(case[key]):
                missing.append(f"{case[key]}: file not found (case {cid}, {key}, from {origin[cid]}.csv)")
                broken.add(cid)
    dropped = [cid for cid in cases if cid in broken] if drop_missing else []
    if dropped:
        gone = set(dropped)
        cases = {cid: c for cid, c in cases.items() if cid not in gone}
        splits = {name: [i for i in ids if i not in gone] for name, ids in splits.items()}
        folds = [{part: [i for i in ids if i not in gone] for part, ids in fold.items()} for fold in folds]

    meta = {
        "name": "pddpm-t2",
        "modality": "T2",
        "geometry": {"space": "SRI24", "spacing_mm": [1.0, 1.0, 1.0], "shape": None},
        "cases": list(cases.values()),
        "splits": splits,
        "folds": folds,
        "label_encoding": "gt0",
        "provenance": [
            {"step": "preprocess", "tool": "pDDPM/mDDPM preprocessing scripts (as published; not re-run here)",
             "settings": SOURCE_PREPROCESSING},
            {"step": "import-pddpm", "tool": f"mddpm {__version__}", "settings": {
                "data_root": str(data_root),
                "files": "referenced in place by absolute path (no copies)",
                "t2_filter": f"IXI rows kept when img_name (t2->t1) is in {AVAIL_T2_CSV}.csv column '0', as the "
                             "released code",
                "img_path_rewrite": "folder 't1' -> 't2' and suffix '_t1.nii.gz' -> '_t2.nii.gz' in the CSV path",
                "mslub_fix": "released mDDPM code points at Test/MSLUB/t1/patientNN_t2.nii.gz (does not exist); "
                             "here Test/MSLUB/t2/patientNN_t2.nii.gz",
                "labels": "seg_path as written (IXI: none); binarised with > 0 (label_encoding gt0)",
                "duplicates": "each subject once per split (the released code keeps duplicate rows, weighting "
                              "those subjects twice)",
                "csv_rows": {c.csv: {"rows": c.rows, "after_t2_filter": c.after_t2_filter, "unique": c.unique,
                                     "duplicate_rows": c.duplicates} for c in counts},
                "missing_files": len(missing),
                "dropped_cases": dropped,
            }},
        ],
    }
    return PddpmImport(data_root=data_root, meta=meta, counts=counts, missing=missing, dropped=dropped)


@writes_folder("out")
def write_import(imported: PddpmImport, out: str | os.PathLike, force: bool = False, strict: bool = False) -> Path:
    """Write ``out/dataset.json``; refuse to overwrite it without ``force``, or (``strict``) to
    write when files are missing. Returns the path written."""
    target = check_new_output(Path(out) / "dataset.json", force)
    if strict and imported.missing:
        raise MddpmError(f"{imported.data_root}: {len(imported.missing)} referenced file(s) missing (--strict), "
                         f"first: {imported.missing[0].split(': file not found')[0]}")
    save_dataset_json(out, imported.meta)
    return target


def import_pddpm(data_dir: str | os.PathLike, out: str | os.PathLike, force: bool = False, strict: bool = False,
                 drop_missing: bool = False) -> PddpmImport:
    """Read the pDDPM layout under ``data_dir`` and write ``out/dataset.json`` (see module doc)."""
    imported = read_pddpm(data_dir, drop_missing=drop_missing)
    write_import(imported, out, force=force, strict=strict)
    return imported


def t1_to_t2_path(path: str) -> str | None:
    """``/Train/ixi/t1/X_t1.nii.gz`` -> ``Train/ixi/t2/X_t2.nii.gz`` (relative, no leading slash);
    None when the path has neither a ``t1`` folder nor a ``_t1`` suffix."""
    parts = PurePosixPath(path.strip().lstrip("/")).parts
    if not parts:
        return None
    folders = ["t2" if p == "t1" else p for p in parts[:-1]]
    name = _T1_SUFFIX.sub(r"_t2\1", parts[-1])
    if folders == list(parts[:-1]) and name == parts[-1]:
        return None
    return str(PurePosixPath(*folders, name))


def _case_from_row(row: dict, data_root: Path, group: str, csv_path: Path, number: int) -> dict:
    """One case from CSV data row ``number`` (1-based): absolute T2, mask and seg paths."""
    name = row["img_name"].strip()
    cid = _NAME_SUFFIX.sub("", name) if name else ""
    if not cid:
        raise MddpmError(f"{csv_path}: row {number}: empty img_name")
    check_case_id(cid, f"{csv_path}: row {number}: img_name")
    image = t1_to_t2_path(row["img_path"])
    if image is None:
        raise MddpmError(f"{csv_path}: row {number}: img_path {row['img_path']!r} has no t1 folder or _t1 suffix to "
                         "rewrite to t2")
    mask = row["mask_path"].strip().lstrip("/")
    if not mask:
        raise MddpmError(f"{csv_path}: row {number}: empty mask_path")
    healthy = group == "ixi"
    seg = "" if healthy else row["seg_path"].strip().lstrip("/")
    if not healthy and not seg:
        raise MddpmError(f"{csv_path}: row {number}: empty seg_path for an anomalous case")
    return {"id": cid, "role": "healthy" if healthy else "anomalous", "group": group,
            "image": str(data_root / image), "mask": str(data_root / mask),
            "label": str(data_root / seg) if seg else None}


def _paths(case: dict) -> tuple:
    return case["image"], case["mask"], case["label"]


def _read_csv(path: Path, columns: list[str]) -> list[dict]:
    if not path.is_file():
        raise MddpmError(f"{path}: file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            absent = [c for c in columns if c not in (reader.fieldnames or [])]
            if absent:
                raise MddpmError(f"{path}: missing column(s) {', '.join(repr(c) for c in absent)}")
            rows = list(reader)
    except (csv.Error, UnicodeDecodeError) as e:
        raise MddpmError(f"{path}: not a readable CSV ({e})") from None
    for number, row in enumerate(rows, start=1):
        if any(row.get(c) is None for c in columns):
            raise MddpmError(f"{path}: row {number}: too few fields")
    return rows
