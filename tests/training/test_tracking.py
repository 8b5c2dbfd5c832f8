"""Experiment tracking (`mddpm train --logger`): config as hyperparameters, lr, a validation picture; and
config files (`--config`, `--print-config`) with their validation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

from mddpm.cli.main import main
from mddpm.config import resolve_run_config
from mddpm.errors import MddpmError
from mddpm.io import read_json
from mddpm.training.loggers import panel, parse_logger
from mddpm.training.train import train
from mddpm.weights import load_weights


def test_csv_and_tensorboard_get_config_lr_and_pictures(prepared_phantom, tmp_path):
    run = train(prepared_phantom, "tiny", out=tmp_path / "run", progress=False)  # default loggers: csv, tensorboard
    hparams = yaml.safe_load((run / "logs/csv/hparams.yaml").read_text())
    assert hparams["method"] == "tiny" and hparams["train.lr"] == 0.01 and hparams["model.channels"] == 4
    with open(run / "logs/csv/metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["train/lr"]) for r in rows if r.get("train/lr")] == pytest.approx([0.01] * 4)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "logs/tb"), size_guidance={"images": 0}).Reload()
    pictures = events.Images("val/panel")
    assert [p.step for p in pictures] == [2, 4]  # one per validation
    assert pictures[0].width == 4 * 48 and pictures[0].height == 3 * 48  # 4 slices x (input, recon, map)
    assert "train/lr" in events.Tags()["scalars"]
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")  # TensorBoard's HPARAMS table: the config, bound to val/loss
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["train.lr"].number_value == pytest.approx(0.01)
    assert session.hparams["method"].string_value == "tiny"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["val/loss"]


@pytest.mark.slow  # about 20 s here: MLflow creates its SQLite tables
def test_mlflow_offline_store_gets_config_metrics_and_pictures(prepared_phantom, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # an offline store shared by runs (MLflow 3 retired ./mlruns)
    train(prepared_phantom, "tiny", out=tmp_path / "run", progress=False,
          loggers=[f"mlflow:tracking_uri={store},experiment_name=probe,"
                   f"artifact_location={(tmp_path / 'artifacts').as_uri()}"])
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=store)
    (found,) = client.search_runs([client.get_experiment_by_name("probe").experiment_id])
    assert found.data.params["train.lr"] == "0.01" and found.data.params["method"] == "tiny"
    assert len(client.get_metric_history(found.info.run_id, "val/loss")) == 2
    assert len(client.get_metric_history(found.info.run_id, "train/lr")) == 4
    shots = [a.path for a in client.list_artifacts(found.info.run_id, "val_panel")]
    assert shots == ["val_panel/step_0000002.png", "val_panel/step_0000004.png"]


def test_bad_or_missing_loggers_are_one_line(prepared_phantom, tmp_path, capsys, monkeypatch):
    base = ["train", "--data", str(prepared_phantom), "--method", "tiny", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "a"), "--logger", "neptune"]) == 2
    assert "unknown logger 'neptune' (known: csv, tensorboard, mlflow, wandb)" in capsys.readouterr().err
    real = __import__("importlib.util").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main(base + ["--out", str(tmp_path / "b"), "--logger", "wandb:project=x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mddpm train: error: --logger wandb: the 'wandb' package is not installed (pip install wandb)"]
    assert main(base + ["--out", str(tmp_path / "c"), "--logger", "mlflow:no_such_option=1"]) == 2
    assert "--logger mlflow:" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert parse_logger("tb:version=x,flush_secs=5") == ("tensorboard", {"version": "x", "flush_secs": 5})


def test_panel_rows_are_input_reconstruction_and_scaled_map():
    image = np.full((2, 3, 3), 0.5, np.float32)
    amap = np.zeros((2, 3, 3), np.float32)
    amap[1, 1, 1] = 4.0
    picture = panel(image, image * 2, amap)
    assert picture.shape == (9, 6)
    assert (picture[:3] == 0.5).all() and (picture[3:6] == 1.0).all()  # reconstruction clipped to [0, 1]
    assert picture[7, 4] == 1.0 and picture[6:].sum() == 1.0  # the map over its maximum


def test_config_file_set_wins_and_print_config_round_trips(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("method: mddpm-fpmcm\npreset: demo\ntrain:\n  lr: 2e-3\n  max_steps: 10\nmodel:\n  net:\n"
                    "    model_channels: 8\n  mask_ratio: [0.2, 0.4]\n")
    assert main(["train", "--config", str(path), "--set", "train.max_steps=20", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["method"] == "mddpm-fpmcm" and printed["train"]["lr"] == 0.002  # YAML 1.1's "2e-3" too
    assert printed["train"]["max_steps"] == 20 and printed["model"]["net"]["model_channels"] == 8
    assert printed["model"]["mask_ratio"] == [0.2, 0.4] and printed["model"]["net"]["groups"] == 8  # preset kept
    again = tmp_path / "again.json"
    again.write_text(json.dumps(printed))
    assert resolve_run_config(None, None, again) == printed


@pytest.mark.parametrize("text, message", [
    ("train:\n  lr_typo: 1\n", "train.lr_typo: unknown key"),
    ("model:\n  spectral: centre-square\n", "model.spectral: method mddpm-ipm ignores it (model.masking 'ipm' has no"),
    ("train:\n  batch_size: 0\n", "train.batch_size=0: must be an integer from 1 to 65536"),
    ("train:\n  lr: fast\n", "train.lr=\"fast\": expected float, got str"),
    ("- a list\n", "expected a mapping of settings"),
])
def test_config_file_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MddpmError, match=r"^" + ".*" + _escape(message)):
        resolve_run_config("mddpm-ipm", "demo", path)


def test_setting_ignored_by_the_masking_is_refused_even_from_set(capsys):
    assert main(["train", "--method", "pddpm", "--set", "model.mask_cells=4", "--print-config"]) == 2
    assert capsys.readouterr().err.strip() == ("mddpm train: error: model.mask_cells: method pddpm ignores it "
                                               "(model.masking is 'none'); remove it")
    # the same key is fine once the masking uses it
    cfg = resolve_run_config("pddpm", None, None, ["model.masking=\"ipm\"", "model.mask_cells=4"])
    assert cfg["model"]["mask_cells"] == 4


def test_a_config_mapping_trains_with_the_default_preset(prepared_phantom, tmp_path):
    run = train(prepared_phantom, "tiny", out=tmp_path / "run", progress=False, config_file={"train": {"max_steps": 2}})
    saved = read_json(run / "config.json")
    assert saved["preset"] == "demo" and saved["train"]["max_steps"] == 2


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_resume_takes_a_config_file_on_top_of_the_saved_config(prepared_phantom, tmp_path):
    run = train(prepared_phantom, "tiny", out=tmp_path / "run", progress=False, overrides=["train.max_steps=2"])
    more = tmp_path / "more.json"
    more.write_text(json.dumps({"method": "tiny", "train": {"max_steps": 3}}))
    train(None, None, out=run, resume=True, config_file=more, progress=False)
    assert read_json(run / "config.json")["train"]["max_steps"] == 3
    assert load_weights(run / "last.pt")["step"] == 3
    other = tmp_path / "other.yaml"
    other.write_text("method: vae\n")
    with pytest.raises(MddpmError, match=r"other.yaml: method 'vae' differs from the run's 'tiny'"):
        train(None, None, out=run, resume=True, config_file=other, progress=False)
