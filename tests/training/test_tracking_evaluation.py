"""A training's MLflow run receives its model (weights and config as artifacts) and, through
``evaluate --logger mlflow``, its evaluation metrics: one MLflow file store holds both. TensorBoard gets the
evaluation's scalars in its output folder."""

from __future__ import annotations

import importlib.util

import pytest

from mddpm.cli.main import main
from mddpm.data.prepare import prepare_dataset
from mddpm.io import read_json

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                reason="mlflow is not installed (pip install -e '.[dev]')")


def test_a_file_store_holds_the_training_its_model_and_its_evaluation(phantom_dataset, tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    prepare_dataset(phantom_dataset, "demo", workers=1, progress=False)
    store, run = f"file:{tmp_path / 'mlruns'}", tmp_path / "run"
    assert main(["train", "--data", str(phantom_dataset), "--method", "vae", "--out", str(run), "--set",
                 "train.max_steps=2", "--set", "train.val_every=1", "--set", "train.val_batches=1", "--set",
                 "train.batch_size=2", "--accelerator", "cpu", "--no-progress",
                 "--logger", f"mlflow:tracking_uri={store}"]) == 0
    assert "is an MLflow file store" in capsys.readouterr().err  # a note, not a traceback
    recorded = read_json(run / "logs/tracking.json")["mlflow"]
    assert recorded["tracking_uri"] == store
    for split in ("lesion_val", "lesion_test"):
        assert main(["predict", str(run), "--data", str(phantom_dataset), "--split", split, "--out",
                     str(tmp_path / split), "--device", "cpu", "--no-progress"]) == 0
    assert main(["evaluate", str(tmp_path / "lesion_test"), "--val", str(tmp_path / "lesion_val"), "--out",
                 str(tmp_path / "eval"), "--logger", "mlflow", "--logger", "tensorboard", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"metrics sent to mlflow: run {recorded['run_id']} in {store}" in err
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    metrics = client.get_run(recorded["run_id"]).data.metrics
    report = read_json(tmp_path / "eval/metrics.json")
    assert metrics["eval/lesion_test/dice_bisection"] == pytest.approx(
        report["aggregate"]["rules"]["bisection"]["dice"]["mean"])
    assert metrics["eval/lesion_test/auprc"] == pytest.approx(report["aggregate"]["auprc"]["mean"])
    assert "val/loss" in metrics  # the training's own metrics are in the same run
    assert [a.path for a in client.list_artifacts(recorded["run_id"], "model")] == ["model/best.pt",
                                                                                    "model/config.json"]
    assert list((tmp_path / "eval/logs/tb").glob("events.out.tfevents.*"))
    # a run trained without MLflow needs a named store
    assert main(["evaluate", str(tmp_path / "lesion_test"), "--val", str(tmp_path / "lesion_val"), "--out",
                 str(tmp_path / "eval2"), "--logger", "mlflow:tracking_uri=file:/nonexistent/x/y", "--no-progress",
                 "--logger", "bogus"]) == 2
    assert "unknown logger 'bogus'" in capsys.readouterr().err and not (tmp_path / "eval2").exists()
