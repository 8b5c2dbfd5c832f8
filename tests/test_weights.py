"""Weights files: what a save stores and a load gives back, and damaged or foreign files named in one line."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from mddpm._version import __version__
from mddpm.config import resolve_config
from mddpm.errors import MddpmError
from mddpm.weights import FORMAT, FORMAT_VERSION, build_from_weights, load_weights, save_weights


@pytest.fixture(scope="module")
def config() -> dict:
    return resolve_config("intensity", "demo")


@pytest.fixture
def state() -> dict:
    """A small state dict: trainable parameters (requires_grad) of two dtypes and a non-contiguous view."""
    torch.manual_seed(0)
    net = nn.Linear(6, 3)
    return {"weight": net.weight, "bias": net.bias.to(torch.float64), "view": torch.arange(12.0).view(3, 4).t()}


def _saved(tmp_path, config, state, name="w.pt"):
    return save_weights(tmp_path / name, "intensity", config, state, np.int64(7), torch.tensor(0.25))


def test_a_saved_file_loads_back_as_plain_data(tmp_path, config, state):
    path = _saved(tmp_path / "new" / "folder", config, state)
    assert path == tmp_path / "new" / "folder" / "w.pt" and sorted(p.name for p in path.parent.iterdir()) == ["w.pt"]
    payload = load_weights(path, "intensity")
    assert set(payload) == {"format", "format_version", "mddpm_version", "method", "config", "state_dict", "step",
                            "val_loss"}
    assert (payload["format"], payload["format_version"], payload["mddpm_version"]) == (FORMAT, FORMAT_VERSION,
                                                                                         __version__)
    assert payload["method"] == "intensity" and payload["config"] == config
    assert payload["step"] == 7 and type(payload["step"]) is int  # numpy and tensor scalars become plain numbers
    assert payload["val_loss"] == 0.25 and type(payload["val_loss"]) is float
    assert set(payload["state_dict"]) == set(state)
    for key, tensor in state.items():
        loaded = payload["state_dict"][key]
        assert torch.equal(loaded, tensor) and loaded.dtype == tensor.dtype and not loaded.requires_grad


def test_saving_again_replaces_the_file_and_keeps_no_validation_loss(tmp_path, config, state):
    path = _saved(tmp_path, config, state)
    save_weights(path, "intensity", config, {}, 0, None)
    payload = load_weights(path)
    assert payload["state_dict"] == {} and payload["step"] == 0 and payload["val_loss"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]  # no temporary file left beside it


@pytest.mark.parametrize("damage", ["half", "last bytes", "empty", "central directory"])
def test_a_truncated_or_damaged_file_is_named_in_one_line(tmp_path, config, state, damage):
    path = _saved(tmp_path, config, state)
    data = path.read_bytes()
    path.write_bytes({"half": data[:len(data) // 2], "last bytes": data[:-10], "empty": b"",
                      "central directory": data[:-200] + bytes(150) + data[-50:]}[damage])
    with pytest.raises(MddpmError, match="^" + re.escape(f"{path}: not a PyTorch file")) as err:
        load_weights(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("change, drop, message", [
    ({"format": "other-weights"}, (), "not an mddpm weights file (no \"format\": 'mddpm-weights')"),
    ({}, ("format_version",), "weights format version None written by mddpm"),
    ({}, ("step", "val_loss"), "weights file lacks step, val_loss"),
])
def test_a_file_with_a_wrong_marker_or_missing_entries_is_refused(tmp_path, config, state, change, drop, message):
    path = _saved(tmp_path, config, state)
    payload = torch.load(path, weights_only=True)
    payload.update(change)
    for key in drop:
        del payload[key]
    torch.save(payload, path)
    with pytest.raises(MddpmError, match="^" + re.escape(f"{path}: {message}")):
        load_weights(path)


def test_a_torch_file_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([FORMAT, {"format": FORMAT}], path)
    with pytest.raises(MddpmError, match="^" + re.escape(f"{path}: not an mddpm weights file")):
        load_weights(path)


@pytest.mark.parametrize("stored", [resolve_config("vae", "demo"), ["not", "a", "config"], {"method": "intensity"}])
def test_a_stored_config_that_does_not_describe_the_method_is_refused(tmp_path, stored):
    path = save_weights(tmp_path / "w.pt", "intensity", stored, {}, 0, None)
    with pytest.raises(MddpmError, match="^" + re.escape(f"{path}: its stored config is not valid (")):
        build_from_weights(path)


def test_a_stored_intensity_config_builds_in_eval_mode(tmp_path, config):
    module, payload = build_from_weights(_saved(tmp_path, config, {}), "intensity")
    assert not module.training and payload["config"] == config and module.state_dict() == {}
