"""nnU-Net v2 raw layout in ``mddpm preprocess``: channel suffixes stripped, labels matched, nothing dropped."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import pytest

from mddpm.cli.main import main
from mddpm.data.dataset import load_dataset
from mddpm.errors import MddpmError
from mddpm.preprocess.layout import find_inputs


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def _nnunet_json(root: Path, channels: dict, ending: str = ".nii.gz") -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": channels, "labels": {"background": 0, "tumour": 1},
                                                   "numTraining": 2, "file_ending": ending}))


def test_channel_suffix_is_stripped_and_labels_match(tmp_path):
    _touch(tmp_path / "imagesTr", "BraTS_001_0000.nii.gz", "BraTS_002_0000.nii.gz")
    _touch(tmp_path / "labelsTr", "BraTS_001.nii.gz", "BraTS_002.nii.gz")
    found = find_inputs(tmp_path / "imagesTr", tmp_path / "labelsTr")
    assert found.nnunet and sorted(found.scans) == ["BraTS_001", "BraTS_002"]
    assert found.labels["BraTS_001"] == [tmp_path / "labelsTr" / "BraTS_001.nii.gz"]


def test_plain_folder_keeps_ids_and_refuses_a_label_without_scan(tmp_path):
    _touch(tmp_path / "scans", "sub_0001.nii.gz", "sub_0002.nii.gz")
    _touch(tmp_path / "labels", "sub_0001.nii.gz")
    found = find_inputs(tmp_path / "scans", tmp_path / "labels")
    assert not found.nnunet and sorted(found.scans) == ["sub_0001", "sub_0002"]  # subject numbers, not channels
    _touch(tmp_path / "labels", "sub_0003.nii.gz")
    with pytest.raises(MddpmError, match=r"sub_0003.nii.gz: label matches no scan"):
        find_inputs(tmp_path / "scans", tmp_path / "labels")


def test_unlabelled_nnunet_image_is_refused_unless_declared_healthy(tmp_path):
    _touch(tmp_path / "imagesTr", "A_0000.nii.gz", "B_0000.nii.gz")
    _touch(tmp_path / "labelsTr", "A.nii.gz")
    with pytest.raises(MddpmError, match=r"B_0000.nii.gz: no label B.nii.gz in .*would become healthy"):
        find_inputs(tmp_path / "imagesTr", tmp_path / "labelsTr")
    assert sorted(find_inputs(tmp_path / "imagesTr", tmp_path / "labelsTr", role="healthy").scans) == ["A", "B"]
    assert sorted(find_inputs(tmp_path / "imagesTr", tmp_path / "labelsTr", pattern="A_*").scans) == ["A"]


def test_dataset_folder_channels_file_ending_and_imagesTs(tmp_path):
    root = tmp_path / "Dataset001_BraTS"
    _nnunet_json(root, {"0": "T1", "1": "T2"})
    _touch(root / "imagesTr", "A_0000.nii.gz", "A_0001.nii.gz", "B_0000.nii.gz", "B_0001.nii.gz", "A_0000.nrrd")
    _touch(root / "labelsTr", "A.nii.gz", "B.nii.gz")
    with pytest.raises(MddpmError, match=r"imagesTr: 2 channels per case \(_0000 \(T1\), _0001 \(T2\)\)"):
        find_inputs(root, modality="FLAIR")
    found = find_inputs(root, modality="t2")  # the .nrrd is not the dataset's file_ending: ignored
    assert found.channel == "T2" and found.scans == {c: [root / "imagesTr" / f"{c}_0001.nii.gz"] for c in "AB"}
    assert find_inputs(root, pattern="*_0000.nii.gz").channel == "T1"
    _touch(root / "imagesTs", "C_0000.nii.gz", "C_0001.nii.gz")  # test images without labelsTs
    with pytest.raises(MddpmError, match=r"C_0001.nii.gz: no label C.nii.gz in .*labelsTs \(absent\)"):
        find_inputs(root, modality="T2")
    _touch(root / "labelsTs", "C.nii.gz")
    assert sorted(find_inputs(root, modality="T2").labels) == ["A", "B", "C"]
    with pytest.raises(MddpmError, match="labels from labelsTr"):
        find_inputs(root, tmp_path / "elsewhere", modality="T2")


def test_the_issue_probe_now_imports_the_lesion_case(write_blob_scan, write_lesion_label, tmp_path, capsys):
    """imagesTr/BraTS_001_0000 + labelsTr/BraTS_001: one anomalous test case BraTS_001 with its label."""
    write_blob_scan(tmp_path / "imagesTr" / "BraTS_001_0000.nii.gz", 0)
    write_lesion_label(tmp_path / "labelsTr" / "BraTS_001.nii.gz")
    args = ["preprocess", str(tmp_path / "imagesTr"), str(tmp_path / "out"), "--labels", str(tmp_path / "labelsTr"),
            "--nonzero-mask", "--skip-registration", "--skip-n4", "--spacing", "2", "--no-progress"]
    assert main(args) == 0
    ds = load_dataset(tmp_path / "out")
    case = ds.cases["BraTS_001"]
    assert list(ds.cases) == ["BraTS_001"] and case.role == "anomalous" and case.label is not None
    assert ds.meta["splits"] == {"test": ["BraTS_001"]}
    assert nib.load(str(case.label)).get_fdata().sum() == 27


def test_a_label_left_behind_exits_2_and_writes_nothing(write_blob_scan, write_lesion_label, tmp_path, capsys):
    write_blob_scan(tmp_path / "imagesTr" / "BraTS_001_0000.nii.gz", 0)
    write_blob_scan(tmp_path / "imagesTr" / "BraTS_002_0000.nii.gz", 1)
    write_lesion_label(tmp_path / "labelsTr" / "BraTS_001.nii.gz")
    write_lesion_label(tmp_path / "labelsTr" / "BraTS_003.nii.gz")  # no scan BraTS_003
    args = ["preprocess", str(tmp_path / "imagesTr"), str(tmp_path / "out"), "--labels", str(tmp_path / "labelsTr"),
            "--nonzero-mask", "--skip-registration", "--skip-n4", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "BraTS_003.nii.gz: label matches no scan" in err[0]
    assert not (tmp_path / "out").exists()


def test_mddpm_naming_in_a_plain_images_folder_is_not_nnunet(tmp_path):
    """``images/<id>_0000`` (mddpm's own naming, e.g. a dataset's images/ with its labels/): the channel suffix
    is stripped, but unlabelled scans are healthy cases, not refused as nnU-Net lesion images."""
    _touch(tmp_path / "data" / "images", "h1_0000.nii.gz", "h2_0000.nii.gz", "t1_0000.nii.gz")
    _touch(tmp_path / "data" / "labels", "t1.nii.gz")
    (tmp_path / "data" / "dataset.json").write_text(json.dumps({"format": "mddpm-dataset"}))  # not nnU-Net's
    found = find_inputs(tmp_path / "data" / "images", tmp_path / "data" / "labels")
    assert not found.nnunet and sorted(found.scans) == ["h1", "h2", "t1"] and list(found.labels) == ["t1"]
    _touch(tmp_path / "Dataset002_X" / "imagesTr", "h1_0000.nii.gz", "t1_0000.nii.gz")  # the nnU-Net folders
    _touch(tmp_path / "Dataset002_X" / "labelsTr", "t1.nii.gz")
    _nnunet_json(tmp_path / "Dataset002_X", {"0": "T2"})
    for where in (tmp_path / "Dataset002_X", tmp_path / "Dataset002_X" / "imagesTr"):
        labels = None if where.name.startswith("Dataset") else where.parent / "labelsTr"
        with pytest.raises(MddpmError, match="h1_0000.nii.gz: no label h1.nii.gz in .*would become healthy"):
            find_inputs(where, labels)


def test_preprocess_of_mddpm_naming_keeps_the_healthy_cases(write_blob_scan, write_lesion_label, tmp_path, capsys):
    for i, cid in enumerate(["h1", "h2", "t1"]):
        write_blob_scan(tmp_path / "images" / f"{cid}_0000.nii.gz", i)
    write_lesion_label(tmp_path / "labels" / "t1.nii.gz")
    args = ["preprocess", str(tmp_path / "images"), str(tmp_path / "out"), "--labels", str(tmp_path / "labels"),
            "--nonzero-mask", "--skip-registration", "--skip-n4", "--spacing", "2", "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    ds = load_dataset(tmp_path / "out")
    assert {c.id: c.role for c in ds.cases.values()} == {"h1": "healthy", "h2": "healthy", "t1": "anomalous"}
