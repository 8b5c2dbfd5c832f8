"""``mddpm evaluate`` end to end on maps written for the phantom dataset's prepared cache."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.measure import label as sk_label
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from mddpm.cli.main import main
from mddpm.data.cache import load_prepared
from mddpm.data.dataset import load_dataset
from mddpm.data.grids import GridSpec
from mddpm.data.prepare import prepare_dataset
from mddpm.errors import MddpmError
from mddpm.evaluation.evaluate import evaluate
from mddpm.evaluation.threshold import bisection_threshold
from mddpm.io import write_nifti
from mddpm.viz.cases import render_case_figure


def reference_case(maps_dir: Path, cid: str, threshold: float, kernel: int = 5, max_size: int = 7) -> dict:
    """One case through scipy / skimage / scikit-learn, independently of mddpm's implementation."""
    prepared = load_prepared(json.loads((maps_dir / "predict.json").read_text())["prepared"])
    _, mask, label = prepared.volume(cid)
    import nibabel as nib

    score = np.asarray(nib.load(str(maps_dir / f"{cid}.nii.gz")).dataobj, dtype=np.float32).transpose(2, 0, 1)
    cross = ndimage.generate_binary_structure(2, 1)
    eroded = np.stack([ndimage.binary_erosion(m > 0, structure=cross, iterations=mask.shape[-1] // 25)
                       if mask.shape[-1] >= 25 else m > 0 for m in mask])
    post = ndimage.median_filter(score * eroded, size=kernel, mode="reflect")
    gt = label > 0
    pred = post > np.float32(threshold)
    cc = sk_label(pred, connectivity=3)
    sizes = np.bincount(cc.ravel())
    pred &= sizes[cc] > max_size
    tp = int((pred & gt).sum())
    return {"post": post, "gt": gt, "auprc": average_precision_score(gt.ravel(), post.ravel()),
            "auroc": roc_auc_score(gt.ravel(), post.ravel()), "dice": 2 * tp / (pred.sum() + gt.sum()), "tp": tp}


def test_evaluate_end_to_end_matches_reference(phantom_maps, tmp_path):
    out = tmp_path / "eval"
    report = evaluate(phantom_maps["test"], phantom_maps["val"], out, rules=["exact"],
                      healthy_val=phantom_maps["healthy"], figures=1, draw_case=render_case_figure,
                      log=lambda msg: None)
    for name in ("metrics.json", "metrics.csv", "metrics.md", "threshold.json"):
        assert (out / name).is_file()
    figures = list((out / "figures").glob("*.png"))
    assert len(figures) == 1 and figures[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rules = report["protocol"]["threshold"]["rules"]
    assert rules == ["bisection", "exact", "fpr-0.01", "fpr-0.05", "fpr-0.1"]
    threshold = json.loads((out / "threshold.json").read_text())
    assert threshold["rule"] == "bisection" and threshold["val_split"] == "lesion_val"
    assert threshold["threshold"] == report["thresholds"]["bisection"]["threshold"]
    assert report["thresholds"]["exact"]["dice"] >= report["thresholds"]["bisection"]["dice"]
    assert report["config"] == {"method": "mddpm", "preset": "test"}

    # the val threshold equals a bisection over the independently post-processed, pooled val maps
    val_ids = json.loads((phantom_maps["val"] / "predict.json").read_text())["case_ids"]
    refs = [reference_case(phantom_maps["val"], cid, 0.0) for cid in val_ids]
    pooled = bisection_threshold(torch.from_numpy(np.concatenate([r["post"].ravel() for r in refs])),
                                 torch.from_numpy(np.concatenate([r["gt"].ravel() for r in refs])))
    assert threshold["threshold"] == pooled.threshold

    cases = report["cases"]
    test_ids = json.loads((phantom_maps["test"] / "predict.json").read_text())["case_ids"]
    assert [c["case_id"] for c in cases] == test_ids
    for case in cases:
        ref = reference_case(phantom_maps["test"], case["case_id"], threshold["threshold"])
        assert case["auprc"] == pytest.approx(ref["auprc"], abs=1e-12)
        assert case["auroc"] == pytest.approx(ref["auroc"], abs=1e-12)
        assert case["rules"]["bisection"]["dice"] == pytest.approx(ref["dice"], abs=1e-12)
        assert case["rules"]["bisection"]["tp"] == ref["tp"]
        assert case["oracle_dice_exact"] >= case["oracle_dice_bisection"] - 1e-12
        assert case["lesion_voxels"] == int(ref["gt"].sum())
    dices = [c["rules"]["bisection"]["dice"] for c in cases]
    agg = report["aggregate"]["rules"]["bisection"]["dice"]
    assert agg["mean"] == pytest.approx(np.mean(dices)) and agg["std"] == pytest.approx(np.std(dices))
    assert agg["mean"] > 0.5  # the phantom lesions are found
    pooled_counts = report["pooled"]["bisection"]
    assert pooled_counts["tp"] == sum(c["rules"]["bisection"]["tp"] for c in cases)

    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == test_ids
    assert float(rows[0]["bisection.dice"]) == pytest.approx(dices[0])
    md = (out / "metrics.md").read_text()
    assert "| **bisection** (default)" in md and "ORACLE" in md and test_ids[0] in md


def test_physical_postprocess_keeps_the_published_sizes_in_mm(phantom_dataset, write_maps, tmp_path):
    coarse = GridSpec(crop_mm=(64.0, 64.0, 32.0), spacing_mm=4.0, curvature_flow=False)  # 16x16x8 of 4 mm
    prepared_dir = prepare_dataset(phantom_dataset, coarse, workers=1, progress=False)
    val = write_maps(phantom_dataset, prepared_dir, "lesion_val", tmp_path / "val", 0)
    test = write_maps(phantom_dataset, prepared_dir, "lesion_test", tmp_path / "test", 1)
    published = evaluate(test, val, tmp_path / "published", log=lambda msg: None, pr_curve=True)
    physical = evaluate(test, val, tmp_path / "physical", log=lambda msg: None, postprocess="physical", pr_curve=True)
    settings = physical["protocol"]["postprocess"]
    assert settings["rule"] == "physical" and settings["voxel_mm"] == 4.0
    assert settings["median_filter"]["kernel"] == 3 and settings["components"]["removed_if_voxels_at_most"] == 0
    assert published["protocol"]["postprocess"]["median_filter"]["kernel"] == 5
    threshold = physical["thresholds"]["bisection"]["threshold"]
    for case in physical["cases"]:
        ref = reference_case(test, case["case_id"], threshold, kernel=3, max_size=0)
        assert case["rules"]["bisection"]["dice"] == pytest.approx(ref["dice"], abs=1e-12)
        assert case["auprc"] == pytest.approx(ref["auprc"], abs=1e-12)
    assert json.loads((tmp_path / "physical" / "threshold.json").read_text())["postprocess"] == settings
    # the pooled PR curve (pr.json) post-processes as the evaluation did, and its points and AP are scikit-learn's
    refs = [reference_case(test, c["case_id"], threshold, kernel=3, max_size=0) for c in physical["cases"]]
    gt, post = np.concatenate([r["gt"].ravel() for r in refs]), np.concatenate([r["post"].ravel() for r in refs])
    curve = json.loads((tmp_path / "physical" / "pr.json").read_text())  # stored by evaluate, read by the report
    assert curve["ap"] == pytest.approx(average_precision_score(gt, post), abs=1e-12)
    assert curve["voxels"] == gt.size and curve["lesion_voxels"] == gt.sum() and curve["volumes"] == len(refs)
    precision, recall, _ = precision_recall_curve(gt, post)
    points = set(zip(np.round(recall, 12), np.round(precision, 12)))
    assert len(curve["recall"]) > 10 and all((round(r, 12), round(p, 12)) in points
                                             for r, p in zip(curve["recall"], curve["precision"]))
    assert json.loads((tmp_path / "published" / "pr.json").read_text())["ap"] != pytest.approx(curve["ap"], abs=1e-6)
    with pytest.raises(MddpmError, match="--postprocess"):
        evaluate(test, val, tmp_path / "bad", log=lambda msg: None, postprocess="metric")


def test_evaluate_is_deterministic(phantom_maps, tmp_path):
    a = evaluate(phantom_maps["test"], phantom_maps["val"], tmp_path / "a", log=lambda msg: None)
    b = evaluate(phantom_maps["test"], phantom_maps["val"], tmp_path / "b", log=lambda msg: None)
    assert a["protocol"]["threshold"]["rules"] == ["bisection"]
    for report in (a, b):
        report.pop("created")
    assert a == b
    ja = json.loads((tmp_path / "a" / "metrics.json").read_text())
    jb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    ja.pop("created"), jb.pop("created")
    assert ja == jb
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()


def test_cli_refuses_to_overwrite_and_reports_bad_input(phantom_maps, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["evaluate", str(phantom_maps["test"]), "--val", str(phantom_maps["val"]), "--out", str(out)]
    assert main(args + ["--rule", "exact", "--figures", "1"]) == 0
    printed = capsys.readouterr().out
    assert "Dice (bisection" in printed and "Dice (exact" in printed
    assert len(list((out / "figures").glob("*.png"))) == 1
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    capsys.readouterr()

    first = json.loads((phantom_maps["test"] / "predict.json").read_text())["case_ids"][0]
    (phantom_maps["test"] / f"{first}.nii.gz").unlink()
    assert main(["evaluate", str(phantom_maps["test"]), "--val", str(phantom_maps["val"]),
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert f"{first}.nii.gz: file not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_cli_rejects_wrong_grid_and_healthy_val_split(phantom_maps, tmp_path, capsys):
    cid = json.loads((phantom_maps["val"] / "predict.json").read_text())["case_ids"][0]
    write_nifti(phantom_maps["val"] / f"{cid}.nii.gz", np.zeros((8, 8, 8), np.float32), np.eye(4))
    assert main(["evaluate", str(phantom_maps["test"]), "--val", str(phantom_maps["val"]),
                 "--out", str(tmp_path / "x")]) == 2
    assert "does not match the prepared grid" in capsys.readouterr().err
    # a healthy split cannot choose a Dice threshold
    assert main(["evaluate", str(phantom_maps["test"]), "--val", str(phantom_maps["healthy"]),
                 "--out", str(tmp_path / "y")]) == 2
    assert "no lesion voxels" in capsys.readouterr().err


def test_threshold_maps_sharing_test_cases_are_refused(phantom_maps, tmp_path):
    copy = tmp_path / "copy_of_test"
    shutil.copytree(phantom_maps["test"], copy)
    for val, healthy in ((phantom_maps["test"], None), (copy, None), (phantom_maps["val"], copy)):
        with pytest.raises(MddpmError, match="case\\(s\\) of the test maps"):
            evaluate(phantom_maps["test"], val, tmp_path / "out", healthy_val=healthy, log=lambda msg: None)
    assert not (tmp_path / "out").exists()


def test_write_segmentations_in_the_scans_geometry(phantom_maps, phantom_dataset, tmp_path, capsys):
    import nibabel as nib

    out = tmp_path / "eval"
    assert main(["evaluate", str(phantom_maps["test"]), "--val", str(phantom_maps["val"]), "--out", str(out),
                 "--write-segmentations", "--no-progress"]) == 0
    capsys.readouterr()
    report = json.loads((out / "metrics.json").read_text())
    dataset = load_dataset(phantom_dataset)
    for case in report["cases"]:
        written = nib.load(str(out / "segmentations" / f"{case['case_id']}.nii.gz"))
        scan = nib.load(str(dataset.cases[case["case_id"]].image))
        seg = np.asarray(written.dataobj)
        label = np.asarray(nib.load(str(dataset.cases[case["case_id"]].label)).dataobj) > 0
        assert seg.shape == scan.shape and seg.dtype == np.uint8 and np.allclose(written.affine, scan.affine)
        assert int(written.header["qform_code"]) == 1 and written.header.get_xyzt_units()[0] == "mm"
        counts = case["rules"]["bisection"]  # this grid is the scan's own: voxel for voxel the counted segmentation
        assert int(seg.sum()) == counts["tp"] + counts["fp"] and int((seg.astype(bool) & label).sum()) == counts["tp"]
    assert sum(case["rules"]["bisection"]["tp"] for case in report["cases"]) > 0
    # rerun with --force: the segmentations are ours to replace
    assert main(["evaluate", str(phantom_maps["test"]), "--val", str(phantom_maps["val"]), "--out", str(out), "--force",
                 "--no-progress"]) == 0
    assert not (out / "segmentations").exists()
