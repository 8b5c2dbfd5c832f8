"""mddpm verify: every planted problem is reported in one run; clean data passes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mddpm.cli.main import main
from mddpm.data.verify import Problem, check_dataset, verify_dataset
from mddpm.io import read_json, read_nifti, write_json, write_nifti


def _edit_meta(root: Path, change) -> None:
    meta = read_json(root / "dataset.json")
    change(meta)
    write_json(root / "dataset.json", meta)


def _rewrite(path: Path, fn) -> None:
    data, affine = read_nifti(path)
    data, affine = fn(data, affine)
    write_nifti(path, data, affine)


def _find(problems: list[Problem], code: str, case: str | None = None, where: str | None = None) -> list[Problem]:
    return [p for p in problems if p.code == code and (case is None or p.case == case)
            and (where is None or p.where.endswith(where))]


def test_clean_phantom_passes(phantom_dataset, capsys):
    assert verify_dataset(phantom_dataset) == []
    assert main(["verify", str(phantom_dataset)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("OK:") and "0 errors" in out[-1] and "24 files read" in out[-1]


def test_every_planted_problem_is_listed_in_one_run(phantom_dataset, capsys):
    root = phantom_dataset
    (root / "masks/case000.nii.gz").unlink()                                          # missing file
    _rewrite(root / "masks/case001.nii.gz", lambda d, a: (d[:30], a))                 # shape mismatch
    _rewrite(root / "masks/case002.nii.gz", lambda d, a: (d, a + np.array([[0, 0, 0, 5.0]] * 3 + [[0] * 4])))  # affine
    _rewrite(root / "images/case003_0000.nii.gz", lambda d, a: (d[:, :, 0], a))       # 2-D image
    write_nifti(root / "images/case004_0000.nii.gz", np.zeros((32, 32, 16, 2), np.float32), np.eye(4))  # 4-D image
    _rewrite(root / "images/case005_0000.nii.gz", lambda d, a: (np.where(d > 0.55, np.nan, d), a))  # NaN voxels
    _rewrite(root / "masks/case006.nii.gz", lambda d, a: (np.zeros_like(d, np.uint8), a))  # empty brain mask
    _rewrite(root / "labels/case007.nii.gz", lambda d, a: (_brats_values(d), a))          # labels {0, 1, 2, 4}

    def plant_meta(meta):
        meta["cases"].append(dict(meta["cases"][8]))                                    # duplicate case id
        meta["splits"]["test"].append("ghost")                                          # unknown case in a split
    _edit_meta(root, plant_meta)

    assert main(["verify", str(root)]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    result = check_dataset(root)
    problems = result.problems
    assert _find(problems, "missing-file", "case000", "masks/case000.nii.gz")
    assert _find(problems, "shape-mismatch", "case001", "masks/case001.nii.gz")
    assert _find(problems, "affine-mismatch", "case002", "masks/case002.nii.gz")
    assert "by up to 5 mm" in _find(problems, "affine-mismatch", "case002")[0].message
    assert "(32, 32)" in _find(problems, "not-3d", "case003", "images/case003_0000.nii.gz")[0].message
    assert "(32, 32, 16, 2)" in _find(problems, "not-3d", "case004", "images/case004_0000.nii.gz")[0].message
    assert _find(problems, "non-finite", "case005", "images/case005_0000.nii.gz")
    assert _find(problems, "empty-mask", "case006", "masks/case006.nii.gz")
    not_binary = _find(problems, "label-not-binary", "case007", "labels/case007.nii.gz")
    assert not_binary and "2, 4" in not_binary[0].message
    assert _find(problems, "duplicate-id", "case008")
    assert "ghost" in _find(problems, "unknown-case", where="dataset.json")[0].message
    assert all(p.severity == "error" for p in problems)
    assert not [p for p in problems if p.case == "case009"]  # the untouched case is clean
    # One printed line per problem, file path first, then the summary.
    assert len(lines) == len(problems) + 1
    assert {line.split(": ")[0] for line in lines[:-1]} == {p.where for p in problems}
    assert lines[-1].startswith("FAILED:") and f"{len(problems)} errors" in lines[-1]


def _brats_values(lesion: np.ndarray) -> np.ndarray:
    """The lesion with BraTS-style values: 2 and 4 on its first voxels, 1 elsewhere."""
    out = (lesion > 0).astype(np.uint8)
    out.flat[np.flatnonzero(out)[:2]] = [2, 4]
    return out


def test_json_output_lists_problems(phantom_dataset, capsys):
    (phantom_dataset / "labels/case009.nii.gz").unlink()
    assert main(["verify", str(phantom_dataset), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["errors"] == 1 and report["cases"] == 10
    (problem,) = report["problems"]
    assert problem["code"] == "missing-file" and problem["case"] == "case009"
    assert problem["where"].endswith("labels/case009.nii.gz")


@pytest.mark.parametrize("content, code", [
    (None, "missing-file"),
    ("{not json", "invalid-json"),
    ('{"format": "nnunet"}', "unknown-format"),
    ('{"format": "mddpm-dataset", "format_version": 7}', "unknown-format"),
])
def test_bad_dataset_json(tmp_path, content, code, capsys):
    if content is not None:
        (tmp_path / "dataset.json").write_text(content)
    problems = verify_dataset(tmp_path)
    assert [p.code for p in problems] == [code]
    assert problems[0].where == str(tmp_path / "dataset.json")
    assert main(["verify", str(tmp_path)]) == 2
    assert capsys.readouterr().out.startswith(str(tmp_path / "dataset.json"))


def test_constant_image_is_an_error_and_negative_values_a_warning(phantom_dataset):
    _rewrite(phantom_dataset / "images/case000_0000.nii.gz", lambda d, a: (np.full_like(d, 3.0), a))
    _rewrite(phantom_dataset / "images/case001_0000.nii.gz", lambda d, a: (np.where(d > 0, 0.7, 0.0), a))
    _rewrite(phantom_dataset / "images/case002_0000.nii.gz", lambda d, a: (d - 0.1, a))
    problems = verify_dataset(phantom_dataset)
    constant = _find(problems, "constant-image")
    assert [p.case for p in constant] == ["case000", "case001"] and {p.severity for p in constant} == {"error"}
    assert "inside the brain mask" in constant[1].message
    (negative,) = _find(problems, "negative-values")
    assert negative.case == "case002" and negative.severity == "warning"
    assert len(problems) == 3


def test_warnings_pass_unless_strict(phantom_dataset):
    _rewrite(phantom_dataset / "images/case002_0000.nii.gz", lambda d, a: (d - 0.1, a))
    assert main(["verify", str(phantom_dataset)]) == 0
    assert main(["verify", str(phantom_dataset), "--strict"]) == 2


def test_label_encoding_gt0_accepts_brats_labels_with_one_note(phantom_dataset):
    for cid in ("case006", "case007"):
        _rewrite(phantom_dataset / f"labels/{cid}.nii.gz", lambda d, a: (d * 4, a))  # lesion voxels = 4
    assert {p.code for p in verify_dataset(phantom_dataset)} == {"label-not-binary"}
    _edit_meta(phantom_dataset, lambda m: m.update(label_encoding="gt0"))
    (note,) = verify_dataset(phantom_dataset)
    assert note.severity == "note" and note.code == "label-values"
    assert note.message.startswith("2 labels") and "(4)" in note.message


def test_mask_not_binary(phantom_dataset):
    _rewrite(phantom_dataset / "masks/case000.nii.gz", lambda d, a: (d * 0.5, a))
    (problem,) = verify_dataset(phantom_dataset)
    assert (problem.code, problem.case, problem.severity) == ("mask-not-binary", "case000", "error")
    assert "0.5" in problem.message


def test_roles_labels_and_splits(phantom_dataset):
    def change(meta):
        meta["cases"][0]["label"] = "labels/case006.nii.gz"   # healthy case with a label: note
        meta["cases"][7]["label"] = None                       # anomalous case without label: error
        meta["splits"]["val"] = meta["splits"]["train"][:1]    # overlaps train: warning
        meta["splits"]["train"].append("case008")              # anomalous case in train: warning
        meta["folds"][0]["val"].append("nobody")               # unknown case in a fold: error
    _edit_meta(phantom_dataset, change)
    problems = verify_dataset(phantom_dataset)
    by_code = {p.code: p for p in problems}
    assert by_code["healthy-label"].severity == "note" and "case000" in by_code["healthy-label"].message
    assert by_code["missing-label"].severity == "error" and by_code["missing-label"].case == "case007"
    overlaps = sorted(p.message for p in _find(problems, "split-overlap"))
    assert overlaps == ["split 'train' and split 'lesion_test' share 1 case(s): case008",
                        "split 'train' and split 'val' share 1 case(s): case000"]
    assert by_code["anomalous-in-train"].severity == "warning" and "case008" in by_code["anomalous-in-train"].message
    assert "fold 0 val" in by_code["unknown-case"].message and "nobody" in by_code["unknown-case"].message


def test_headers_only_checks_geometry_not_values(phantom_dataset, capsys):
    _rewrite(phantom_dataset / "masks/case001.nii.gz", lambda d, a: (d[:30], a))
    _rewrite(phantom_dataset / "images/case005_0000.nii.gz", lambda d, a: (np.where(d > 0.55, np.nan, d), a))
    assert {p.code for p in verify_dataset(phantom_dataset)} == {"shape-mismatch", "non-finite"}
    assert [p.code for p in verify_dataset(phantom_dataset, voxels=False)] == ["shape-mismatch"]
    assert main(["verify", str(phantom_dataset), "--headers-only"]) == 2
    assert "24 headers read" in capsys.readouterr().out
