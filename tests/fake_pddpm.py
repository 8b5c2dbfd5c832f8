"""A tiny fake of the pDDPM/mDDPM preprocessed data tree, for tests of the importer and beyond.

The layout and CSV columns are those of the released data (as mddpm.data.import_pddpm reads it)::

    <root>/Data/splits/{IXI_train_fold0..k,IXI_val_fold0..k,IXI_test,Brats21_val,Brats21_test,
                        MSLUB_val,MSLUB_test,avail_t2}.csv
    <root>/Data/Train/ixi/{t2,mask}/IXI<id>_{t2,mask}.nii.gz
    <root>/Data/Test/Brats21/{t2,mask,seg}/BraTS2021_<id>_{t2,mask,seg}.nii.gz
    <root>/Data/Test/MSLUB/{t2,mask,seg}/patient<NN>_{t2,mask,seg}.nii.gz

As in the released CSVs, paths are written for T1 (``/Train/ixi/t1/..._t1.nii.gz``), IXI rows are
filtered by ``avail_t2.csv`` (column ``0``), each train CSV repeats one row, IXI_test shares one
subject with fold-0 train, BraTS segmentations hold {0, 1, 2, 4}, and MSLUB has a ``t1`` folder (the
released code's T2 rewrite for MSLUB points into it). Volumes are 8x8x4 (1 mm).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mddpm.io import write_nifti

IXI_COLUMNS = ["", "img_name", "SEX_ID (1=m, 2=f)", "HEIGHT", "WEIGHT", "ETHNIC_ID", "MARITAL_ID", "OCCUPATION_ID",
               "QUALIFICATION_ID", "DATE_AVAILABLE", "STUDY_DATE", "age", "label", "img_path", "mask_path",
               "seg_path", "Agegroup"]
BRATS_COLUMNS = ["", "img_name", "Cohort Name (if publicly available)",
                 "Site No (represents the originating institution)", "Local ID ", "age", "label", "img_path",
                 "mask_path", "seg_path"]
MSLUB_COLUMNS = ["", "img_name", "age", "sex", "ms_type", "label", "img_path", "mask_path", "seg_path", "Agegroup"]
SITES = ("HH", "Guys", "IOP")


@dataclass
class FakePddpm:
    """What was built, as the importer should see it (ids in first-appearance order, unique)."""

    root: Path  # DATA_DIR (holds Data/)
    data: Path  # root / "Data"
    folds: list[dict[str, list[str]]] = field(default_factory=list)
    splits: dict[str, list[str]] = field(default_factory=dict)
    no_t2: list[str] = field(default_factory=list)  # IXI subjects listed in the CSVs but not in avail_t2.csv
    duplicate_rows: dict[str, int] = field(default_factory=dict)  # CSV stem -> rows repeated in it


def make_fake_pddpm(root: str | Path, n_ixi: int = 10, n_ixi_test: int = 2, n_brats: int = 4, n_mslub: int = 4,
                    n_folds: int = 5, n_no_t2: int = 1, shape: tuple[int, int, int] = (8, 8, 4),
                    seed: int = 0) -> FakePddpm:
    """Write the fake tree under ``root`` and return its description.

    ``n_ixi`` subjects with T2 form the 5 train/val folds (val: a rotating chunk); ``n_ixi_test``
    more form IXI_test together with one fold-0 training subject; ``n_no_t2`` T1-only subjects
    appear in every train CSV and are dropped by the T2 filter; BraTS and MSLUB are split in half
    (val, test).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    data = root / "Data"
    splits_dir = data / "splits"
    splits_dir.mkdir(parents=True, exist_ok=True)
    fake = FakePddpm(root=root, data=data)
    affine = np.array([[1.0, 0, 0, -4], [0, 1.0, 0, -4], [0, 0, 1.0, -2], [0, 0, 0, 1]])

    def volumes(folder: str, cid: str, seg_values: tuple[int, ...] | None) -> None:
        brain = np.zeros(shape, np.uint8)
        brain[1:-1, 1:-1, 1:-1] = 1
        image = np.where(brain > 0, rng.uniform(0.2, 1.0, shape), 0).astype(np.float32)
        write_nifti(data / folder / "t2" / f"{cid}_t2.nii.gz", image, affine)
        write_nifti(data / folder / "mask" / f"{cid}_mask.nii.gz", brain, affine)
        if seg_values is not None:
            seg = np.zeros(shape, np.uint8)
            inner = np.argwhere(brain > 0)[: len(seg_values) * 3]
            for k, (x, y, z) in enumerate(inner):
                seg[x, y, z] = seg_values[k % len(seg_values)]
            write_nifti(data / folder / "seg" / f"{cid}_seg.nii.gz", seg, affine)

    # IXI: subjects with T2 (written to disk) and T1-only subjects (only in CSVs).
    names = [f"IXI{100 + i:03d}-{SITES[i % 3]}-{1000 + i:04d}" for i in range(n_ixi + n_ixi_test + n_no_t2)]
    pool, test_only, fake.no_t2 = names[:n_ixi], names[n_ixi:n_ixi + n_ixi_test], names[n_ixi + n_ixi_test:]
    for cid in pool + test_only:
        volumes("Train/ixi", cid, None)
    _write_csv(splits_dir / "avail_t2.csv", ["", "0"],
               [[i, f"{cid}_t2.nii.gz"] for i, cid in enumerate(pool + test_only)])

    def ixi_row(index: int, cid: str) -> list:
        return [index, f"{cid}_t1.nii.gz", 1 + index % 2, 170, 70, 1, 1, 1, 5, 1, "2005-08-12", 40.5, 0,
                f"/Train/ixi/t1/{cid}_t1.nii.gz", f"/Train/ixi/mask/{cid}_mask.nii.gz", "", 2.0]

    chunk = max(1, n_ixi // n_folds)
    for k in range(n_folds):
        val = pool[k * chunk:(k + 1) * chunk]
        train = [c for c in pool if c not in val]
        train_rows = [train[0]] + train + fake.no_t2  # the first subject repeated, as in the released CSVs
        _write_csv(splits_dir / f"IXI_train_fold{k}.csv", IXI_COLUMNS,
                   [ixi_row(names.index(c), c) for c in train_rows])
        _write_csv(splits_dir / f"IXI_val_fold{k}.csv", IXI_COLUMNS, [ixi_row(names.index(c), c) for c in val])
        fake.folds.append({"train": train, "val": val})
        fake.duplicate_rows[f"IXI_train_fold{k}"] = 1
    test = test_only + [fake.folds[0]["train"][-1]] + fake.no_t2[:1]  # overlap with fold-0 train, as released
    _write_csv(splits_dir / "IXI_test.csv", IXI_COLUMNS, [ixi_row(names.index(c), c) for c in test])
    fake.splits = {"train": fake.folds[0]["train"], "val": fake.folds[0]["val"],
                   "test": test[:-1] if fake.no_t2 else test}

    brats = [f"BraTS2021_{10 + i:05d}" for i in range(n_brats)]
    for cid in brats:
        volumes("Test/Brats21", cid, (1, 2, 4))
    half = n_brats // 2
    for part, ids in (("val", brats[:half]), ("test", brats[half:])):
        _write_csv(splits_dir / f"Brats21_{part}.csv", BRATS_COLUMNS, [
            [i, cid, "Private Collection", 1, "", "", 1, f"/Test/Brats21/t1/{cid}_t1.nii.gz",
             f"/Test/Brats21/mask/{cid}_mask.nii.gz", f"/Test/Brats21/seg/{cid}_seg.nii.gz"]
            for i, cid in enumerate(ids)])
        fake.splits[f"brats21_{part}"] = ids

    mslub = [f"patient{i + 1:02d}" for i in range(n_mslub)]
    for cid in mslub:
        volumes("Test/MSLUB", cid, (1,))
        # A T1 decoy: the released code's MSLUB rewrite points into this t1 folder.
        write_nifti(data / "Test/MSLUB/t1" / f"{cid}_t1.nii.gz", np.ones(shape, np.float32), affine)
    half = n_mslub // 2
    for part, ids in (("val", mslub[:half]), ("test", mslub[half:])):
        _write_csv(splits_dir / f"MSLUB_{part}.csv", MSLUB_COLUMNS, [
            [i, cid, 30, "F", "RR", 1, f"/Test/MSLUB/t1/{cid}_t1.nii.gz", f"/Test/MSLUB/mask/{cid}_mask.nii.gz",
             f"/Test/MSLUB/seg/{cid}_seg.nii.gz", 1.0] for i, cid in enumerate(ids)])
        fake.splits[f"mslub_{part}"] = ids
    return fake


def _write_csv(path: Path, columns: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
