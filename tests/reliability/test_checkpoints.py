"""Weights files load with weights_only=True: a crafted pickle is refused without running, and weights
of another method, grid or format version get a clear one-line error."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from mddpm.cli.main import main
from mddpm.config import build_method, resolve_config
from mddpm.data.synth.phantom import make_phantom_dataset
from mddpm.errors import MddpmError
from mddpm.weights import build_from_weights, load_weights, save_weights


class _Payload:
    """Unpickling this calls ``Path(target).touch()``: what a malicious checkpoint could do."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _save(path: Path, method: str, cfg: dict | None = None) -> Path:
    cfg = cfg or resolve_config(method, "demo", [])
    torch.manual_seed(0)
    return save_weights(path, method, cfg, build_method(cfg).state_dict(), 0, None)


def test_crafted_pickle_is_refused_and_never_runs(tmp_path, capsys):
    target = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": "mddpm-weights", "evil": _Payload(target)}, run / "best.pt")
    assert not target.exists()
    with pytest.raises(MddpmError, match="refused to load"):
        load_weights(run / "best.pt")
    assert not target.exists()
    dataset = make_phantom_dataset(tmp_path / "phantom")
    code = main(["predict", str(run), "--data", str(dataset), "--split", "test", "--out", str(tmp_path / "maps"),
                 "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "best.pt: refused to load" in err and "Traceback" not in err
    assert not target.exists() and not (tmp_path / "maps").exists()


def test_weights_of_another_method_are_refused(tmp_path):
    path = _save(tmp_path / "w.pt", "intensity")
    with pytest.raises(MddpmError, match=r"w\.pt: weights of method 'intensity', expected 'vae'"):
        load_weights(path, method="vae")


def test_weights_of_another_format_version_are_refused(tmp_path):
    path = _save(tmp_path / "w.pt", "intensity")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(MddpmError, match=r"w\.pt: weights format version 99 .* not readable"):
        load_weights(path)


def test_weights_that_do_not_fit_their_model_are_refused(tmp_path):
    """A state dict from another net size (e.g. trained at another grid's preset) is named, not crashed on."""
    small = resolve_config("vae", "demo", [])
    path = _save(tmp_path / "w.pt", "vae", small)
    payload = torch.load(path, weights_only=True)
    other = build_method(resolve_config("vae", "paper", [])).state_dict()
    payload["state_dict"] = other
    torch.save(payload, path)
    with pytest.raises(MddpmError, match=r"w\.pt: weights do not fit the 'vae' model"):
        build_from_weights(path)


def test_weights_naming_an_unknown_grid_are_refused(tmp_path, capsys):
    cfg = copy.deepcopy(resolve_config("intensity", "demo", []))
    cfg["data"]["grid"] = "no-such-grid"
    run = tmp_path / "run"
    _save(run / "best.pt", "intensity", cfg)
    dataset = make_phantom_dataset(tmp_path / "phantom")
    code = main(["predict", str(run), "--data", str(dataset), "--split", "test", "--out", str(tmp_path / "maps"),
                 "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no-such-grid" in err[0]
    assert not (tmp_path / "maps").exists()


def test_random_bytes_as_weights_or_checkpoint_are_one_line(tmp_path, capsys):
    dataset = make_phantom_dataset(tmp_path / "phantom")
    run = tmp_path / "run"
    assert main(["train", "--data", str(dataset), "--method", "intensity", "--out", str(run), "--no-progress"]) == 0
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(bytes(range(256)) * 8)
    (run / "best.pt").write_bytes(bytes(range(256)) * 8)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "last.ckpt: not a PyTorch file" in err
    with pytest.raises(MddpmError, match="best.pt: not a PyTorch file"):
        load_weights(run / "best.pt")
