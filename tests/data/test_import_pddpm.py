"""mddpm import-pddpm on a fake tree in the released pDDPM/mDDPM layout."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fake_pddpm import make_fake_pddpm
from mddpm.cli.main import main
from mddpm.data.dataset import load_dataset
from mddpm.data.import_pddpm import import_pddpm, t1_to_t2_path
from mddpm.errors import MddpmError
from mddpm.io import read_json


@pytest.fixture
def fake(tmp_path):
    return make_fake_pddpm(tmp_path / "pddpm")


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_folds_splits_and_cases(fake, tmp_path):
    out = tmp_path / "ds"
    assert main(["import-pddpm", str(fake.root), str(out)]) == 0
    meta = read_json(out / "dataset.json")
    assert meta["folds"] == fake.folds and len(meta["folds"]) == 5
    assert meta["splits"] == fake.splits
    assert meta["splits"]["train"] == fake.folds[0]["train"] and meta["splits"]["val"] == fake.folds[0]["val"]
    assert meta["label_encoding"] == "gt0"
    ds = load_dataset(out)
    assert len(ds.cases) == len(meta["cases"])  # each case once
    groups = {"IXI": "ixi", "BraTS2021_": "brats21", "patient": "mslub"}
    for case in ds.cases.values():
        (group,) = [g for prefix, g in groups.items() if case.id.startswith(prefix)]
        assert case.group == group
        assert case.role == ("healthy" if group == "ixi" else "anomalous")
        assert (case.label is None) == (group == "ixi")
    # every split and fold names only known cases, each once
    for ids in [*meta["splits"].values(), *(f[p] for f in meta["folds"] for p in ("train", "val"))]:
        assert len(ids) == len(set(ids)) and set(ids) <= set(ds.cases)


def test_t2_filter_duplicates_and_provenance(fake, tmp_path):
    imported = import_pddpm(fake.root, tmp_path / "ds")
    rows = _csv_rows(fake.data / "splits/IXI_train_fold0.csv")
    assert len(rows) == len(fake.folds[0]["train"]) + 1 + len(fake.no_t2)  # one repeated row, T1-only subjects
    ids = {c["id"] for c in imported.meta["cases"]}
    assert fake.no_t2 and not set(fake.no_t2) & ids  # not in avail_t2.csv -> dropped, from train and test CSVs
    settings = imported.meta["provenance"][-1]["settings"]
    fold0 = settings["csv_rows"]["IXI_train_fold0"]
    assert fold0 == {"rows": len(rows), "after_t2_filter": len(rows) - len(fake.no_t2),
                     "unique": len(fake.folds[0]["train"]), "duplicate_rows": fake.duplicate_rows["IXI_train_fold0"]}
    assert settings["csv_rows"]["IXI_test"]["after_t2_filter"] == len(fake.splits["test"])
    assert settings["data_root"] == str(fake.data) and settings["missing_files"] == 0


def test_paths_rewritten_to_t2_in_place_without_copies(fake, tmp_path):
    out = tmp_path / "ds"
    import_pddpm(fake.root, out)
    assert [p.name for p in out.iterdir()] == ["dataset.json"]
    cases = {c["id"]: c for c in read_json(out / "dataset.json")["cases"]}
    folder = {"ixi": "Train/ixi", "brats21": "Test/Brats21", "mslub": "Test/MSLUB"}
    for cid, c in cases.items():
        base = fake.data / folder[c["group"]]
        assert c["image"] == str(base / "t2" / f"{cid}_t2.nii.gz")
        assert c["mask"] == str(base / "mask" / f"{cid}_mask.nii.gz")
        assert c["label"] == (None if c["group"] == "ixi" else str(base / "seg" / f"{cid}_seg.nii.gz"))
        assert all(Path(c[k]).is_absolute() and Path(c[k]).is_file() for k in ("image", "mask"))
    # MSLUB: the CSV says t1; the released code would point at t1/patientNN_t2.nii.gz, which does not exist.
    mslub_row = _csv_rows(fake.data / "splits/MSLUB_val.csv")[0]
    assert mslub_row["img_path"] == f"/Test/MSLUB/t1/{mslub_row['img_name']}_t1.nii.gz"
    assert not (fake.data / "Test/MSLUB/t1" / f"{mslub_row['img_name']}_t2.nii.gz").exists()
    expected = fake.data / "Test/MSLUB/t2" / f"{mslub_row['img_name']}_t2.nii.gz"
    assert cases[mslub_row["img_name"]]["image"] == str(expected)


def test_data_folder_itself_is_accepted(fake, tmp_path):
    a = import_pddpm(fake.root, tmp_path / "a").meta
    b = import_pddpm(fake.data, tmp_path / "b").meta
    assert a == b


def test_import_passes_verify_with_label_note(fake, tmp_path, capsys):
    out = tmp_path / "ds"
    import_pddpm(fake.root, out)
    assert main(["verify", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["errors"] == 0 and report["ok"] is True
    (note,) = [p for p in report["problems"] if p["code"] == "label-values"]
    assert note["severity"] == "note" and "(2, 4)" in note["message"]
    assert note["message"].startswith(f"{len(fake.splits['brats21_val']) + len(fake.splits['brats21_test'])} labels")
    # the released IXI_test shares subjects with fold-0 train; verify says so
    assert any(p["code"] == "split-overlap" and "'test'" in p["message"] for p in report["problems"])


def test_missing_files_reported_strict_and_drop(fake, tmp_path, capsys):
    gone = fake.data / "Test/Brats21/seg" / f"{fake.splits['brats21_test'][0]}_seg.nii.gz"
    gone.unlink()
    assert main(["import-pddpm", str(fake.root), str(tmp_path / "strict"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith(f"{gone}: file not found")
    assert not (tmp_path / "strict" / "dataset.json").exists()

    assert main(["import-pddpm", str(fake.root), str(tmp_path / "kept")]) == 0
    assert capsys.readouterr().err.splitlines() == [f"{gone}: file not found (case {fake.splits['brats21_test'][0]}, "
                                                    f"label, from Brats21_test.csv)"]
    kept = read_json(tmp_path / "kept/dataset.json")
    assert kept["splits"]["brats21_test"] == fake.splits["brats21_test"]
    assert main(["verify", str(tmp_path / "kept")]) == 2  # verify flags the missing file

    imported = import_pddpm(fake.root, tmp_path / "dropped", drop_missing=True)
    assert imported.dropped == fake.splits["brats21_test"][:1]
    assert imported.meta["splits"]["brats21_test"] == fake.splits["brats21_test"][1:]
    assert main(["verify", str(tmp_path / "dropped")]) == 0


def test_refuses_to_overwrite_without_force(fake, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["import-pddpm", str(fake.root), str(out)]) == 0
    before = (out / "dataset.json").read_text()
    assert main(["import-pddpm", str(fake.data), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "dataset.json").read_text() == before
    assert main(["import-pddpm", str(fake.data), str(out), "--force"]) == 0


def test_bad_layouts_give_one_line_errors(fake, tmp_path, capsys):
    assert main(["import-pddpm", str(tmp_path), str(tmp_path / "ds")]) == 2
    assert "no Data/splits folder" in capsys.readouterr().err
    csv_path = fake.data / "splits/Brats21_val.csv"
    csv_path.write_text(csv_path.read_text().replace("seg_path", "segmentation"))
    with pytest.raises(MddpmError, match=r"Brats21_val\.csv: missing column\(s\) 'seg_path'"):
        import_pddpm(fake.root, tmp_path / "ds")
    (fake.data / "splits/avail_t2.csv").unlink()
    with pytest.raises(MddpmError, match=r"avail_t2\.csv: file not found"):
        import_pddpm(fake.root, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_a_traversal_img_name_is_refused(fake, tmp_path):
    csv_path = fake.data / "splits/MSLUB_val.csv"
    rows = _csv_rows(csv_path)
    name = rows[0]["img_name"]
    csv_path.write_text(csv_path.read_text().replace(f",{name},", f",../../{name},", 1))
    with pytest.raises(MddpmError, match=rf"MSLUB_val\.csv: row 1: img_name: case id '\.\./\.\./{name}' holds a path"):
        import_pddpm(fake.root, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_t1_to_t2_path():
    assert t1_to_t2_path("/Train/ixi/t1/IXI002-Guys-0828_t1.nii.gz") == "Train/ixi/t2/IXI002-Guys-0828_t2.nii.gz"
    assert t1_to_t2_path("/Test/MSLUB/t1/patient01_t1.nii.gz") == "Test/MSLUB/t2/patient01_t2.nii.gz"
    assert t1_to_t2_path("/data/t1user/Test/t2/x_t2.nii.gz") is None  # only a "t1" component or suffix counts
