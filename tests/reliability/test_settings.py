"""Every numeric setting has a range, checked before anything is written: a bad ``--set``, a config file, an
experiment's overrides and the config stored in a crafted weights file are all one line, exit 2."""

from __future__ import annotations

import pytest
import torch

from mddpm.cli.main import main

from .helpers import error_line, files_of


@pytest.mark.parametrize("setting, message", [
    ("model.latent_dim=-5", "model.latent_dim=-5: must be an integer from 1 to 65536"),
    ("model.base_channels=0", "model.base_channels=0: must be an integer from 1 to 4096"),
    ("model.latent_dim=1000000000", "model.latent_dim=1000000000: must be an integer from 1 to 65536"),
    ("train.batch_size=1000000000000", "train.batch_size=1000000000000: must be an integer from 1 to 65536"),
    ("train.seed=99999999999999999999999999", "train.seed=99999999999999999999999999: must be an integer from 0"),
    ("model.dropout=2.5", "model.dropout=2.5: must be a number from 0 to 0.99"),
])
@pytest.mark.parametrize("print_config", [True, False], ids=["print-config", "train"])
def test_out_of_range_settings_are_refused_before_anything_is_written(trained, tmp_path, capsys, setting, message,
                                                                       print_config):
    out = tmp_path / "run"
    argv = ["train", "--data", str(trained[0]), "--method", "vae", "--set", setting, "--out", str(out),
            "--accelerator", "cpu", "--no-progress"]
    capsys.readouterr()
    assert main([*argv, *(["--print-config"] if print_config else [])]) == 2
    assert message in error_line(capsys, "train")
    assert not out.exists()


@pytest.mark.parametrize("change, message", [
    ({"base_channels": 10**9}, "model.base_channels=1000000000: must be an integer from 1 to 4096"),
    ({"latent_dim": -1}, "model.latent_dim=-1: must be an integer from 1 to 65536"),
    ({"image_size": "48"}, "model.image_size='48': must be an integer from 8 to 4096"),
    ({"unknown_knob": 1}, "its stored config is not valid (TypeError"),
])
def test_a_crafted_weights_file_is_refused_like_a_crafted_setting(trained, tmp_path, capsys, change, message):
    dataset, run, _, _ = trained
    crafted = tmp_path / "run"
    crafted.mkdir()
    payload = torch.load(run / "best.pt", weights_only=True)
    payload["config"]["model"].update(change)
    torch.save(payload, crafted / "best.pt")
    (crafted / "config.json").write_bytes((run / "config.json").read_bytes())
    before = files_of(tmp_path)
    capsys.readouterr()
    assert main(["predict", str(crafted), "--data", str(dataset), "--split", "lesion_val", "--out",
                 str(tmp_path / "maps"), "--device", "cpu", "--no-progress"]) == 2
    line = error_line(capsys, "predict")
    assert f"{crafted / 'best.pt'}: its stored config is not valid" in line and message in line
    assert files_of(tmp_path) == before
