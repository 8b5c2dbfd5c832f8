"""Training: the generic LightningModule, run folders, exact resume, weights files, DDP, `mddpm train`."""

from __future__ import annotations

import csv
import io
import pickle
import signal
import sys
from pathlib import Path

import pytest
import torch

from mddpm.cli.main import main
from mddpm.errors import MddpmError
from mddpm.io import read_json
from mddpm.run_folder import RunFolder
from mddpm.training.train import train
from mddpm.weights import FORMAT, build_from_weights, load_weights, save_weights
from toy_methods import TinyMethod  # registers the test methods "tiny" and "twogroup"


def _state(path: Path) -> dict:
    return load_weights(path)["state_dict"]


def _metrics(run: Path) -> list[dict]:
    with open(run / "logs" / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_train_writes_a_complete_run(prepared_phantom, tmp_path):
    run = train(prepared_phantom, "tiny", out=tmp_path / "run", progress=False)
    cfg = read_json(run / "config.json")
    assert cfg["method"] == "tiny" and cfg["dataset"] == str(prepared_phantom.resolve()) and cfg["fold"] is None
    assert cfg["prepared"].endswith("prepared/48x48x25") and cfg["train"]["max_steps"] == 4
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "best.pt", "last.pt"):
        assert (run / name).is_file(), name
    last, best = load_weights(run / "last.pt", "tiny"), load_weights(run / "best.pt", "tiny")
    assert last["step"] == 4 and last["config"]["method"] == "tiny" and last["format"] == FORMAT
    init = TinyMethod()
    init_state = init.state_dict()
    assert set(last["state_dict"]) == set(init_state)
    assert any(not torch.equal(last["state_dict"][k], v) for k, v in init_state.items())  # it trained

    rows = _metrics(run)
    train_steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    val = {int(r["step"]): float(r["val/loss"]) for r in rows if r.get("val/loss")}
    assert train_steps == [0, 1, 2, 3]  # logged every step (log_every=1)
    assert len(val) == 2  # validated at steps 2 and 4
    assert best["val_loss"] == pytest.approx(min(val.values()))
    assert best["step"] in (2, 4) and last["val_loss"] == pytest.approx(val[max(val)])
    assert (run / "logs" / "tb").is_dir()


def test_final_step_is_always_validated(prepared_phantom, tmp_path):
    run = train(prepared_phantom, "tiny", out=tmp_path / "run", overrides=["train.max_steps=3"], progress=False)
    val_rows = [r for r in _metrics(run) if r.get("val/loss")]
    assert len(val_rows) == 2  # at step 2 (val_every) and at the final step 3
    assert load_weights(run / "last.pt")["step"] == 3


def test_resume_gives_exactly_the_uninterrupted_weights(prepared_phantom, tmp_path):
    straight = train(prepared_phantom, "tiny", out=tmp_path / "straight", overrides=["train.max_steps=6"],
                     progress=False)
    part = train(prepared_phantom, "tiny", out=tmp_path / "part", overrides=["train.max_steps=3"], progress=False)
    assert load_weights(part / "last.pt")["step"] == 3
    resumed = train(prepared_phantom, "tiny", out=tmp_path / "part", resume=True, overrides=["train.max_steps=6"],
                    progress=False)
    assert resumed == part and read_json(part / "config.json")["train"]["max_steps"] == 6
    a, b = _state(straight / "last.pt"), _state(part / "last.pt")
    assert load_weights(part / "last.pt")["step"] == 6
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_ctrl_c_gives_exactly_the_uninterrupted_weights(prepared_phantom, tmp_path):
    settings = ["train.max_steps=8", "train.val_every=4"]
    straight = train(prepared_phantom, "tiny", out=tmp_path / "straight", overrides=settings, progress=False)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 5; .* continues with --resume"):
        train(prepared_phantom, "tiny", out=tmp_path / "cut", overrides=settings + ["model.interrupt_at=5"],
              progress=False)
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning ignored Ctrl-C while it saved; train restores it
    assert torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
    train(prepared_phantom, "tiny", out=tmp_path / "cut", resume=True, overrides=["model.interrupt_at=null"],
          progress=False)
    a, b = load_weights(straight / "last.pt"), load_weights(tmp_path / "cut" / "last.pt")
    assert a["step"] == b["step"] == 8 and a["val_loss"] == b["val_loss"]  # validated at the same steps
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_existing_run_is_refused_unless_force_or_resume(prepared_phantom, tmp_path):
    run = train(prepared_phantom, "tiny", out=tmp_path / "run", overrides=["train.max_steps=1"], progress=False)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(MddpmError, match="already exists"):
        train(prepared_phantom, "tiny", out=run, overrides=["train.max_steps=1"], progress=False)
    with pytest.raises(MddpmError, match="exclude"):
        train(prepared_phantom, "tiny", out=run, resume=True, force=True, progress=False)
    with pytest.raises(MddpmError, match="method 'tiny', not 'vae'"):
        train(prepared_phantom, "vae", out=run, resume=True, progress=False)
    with pytest.raises(MddpmError, match="did not write there \\(e.g. notes.txt\\)"):  # --force deletes no foreign file
        train(prepared_phantom, "tiny", out=run, overrides=["train.max_steps=2"], force=True, progress=False)
    assert (run / "notes.txt").read_text() == "mine" and load_weights(run / "last.pt")["step"] == 1
    (run / "notes.txt").unlink()
    train(prepared_phantom, "tiny", out=run, overrides=["train.max_steps=2"], force=True, progress=False)
    assert load_weights(run / "last.pt")["step"] == 2
    with pytest.raises(MddpmError, match="nothing to resume"):
        train(prepared_phantom, "tiny", out=tmp_path / "empty", resume=True, progress=False)


def test_bad_train_settings_are_refused_before_writing(prepared_phantom, tmp_path):
    for setting, message in (("train.precision=fp16", "train.precision"), ("train.val_every=0", "train.val_every"),
                             ("data.grid=huge", "unknown grid")):
        with pytest.raises(MddpmError, match=message):
            train(prepared_phantom, "tiny", out=tmp_path / "run", overrides=[setting], progress=False)
        assert not (tmp_path / "run" / "config.json").exists()
    with pytest.raises(MddpmError, match="no fold 3"):
        train(prepared_phantom, "tiny", out=tmp_path / "run", fold=3, progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(MddpmError, match="--accelerator gpu"):
            train(prepared_phantom, "tiny", out=tmp_path / "run", accelerator="gpu", progress=False)
    assert not (tmp_path / "run").exists()


def test_optimizer_index_options_and_lr_scale(prepared_phantom, tmp_path):
    # step 0 trains group a, step 1 group b; an lr of 0 for b (optimizer_options) keeps b fixed
    run = train(prepared_phantom, "twogroup", out=tmp_path / "opts", progress=False,
                overrides=['model.options=[{}, {"lr": 0.0}]'])
    state = _state(run / "last.pt")
    assert state["a"].item() != 0 and state["b"].item() == 0
    # one step only trains a
    run = train(prepared_phantom, "twogroup", out=tmp_path / "one", progress=False, overrides=["train.max_steps=1"])
    state = _state(run / "last.pt")
    assert state["a"].item() != 0 and state["b"].item() == 0
    # both after two steps; lr_scale 0 freezes everything
    run = train(prepared_phantom, "twogroup", out=tmp_path / "two", progress=False)
    state = _state(run / "last.pt")
    assert state["a"].item() != 0 and state["b"].item() != 0
    run = train(prepared_phantom, "twogroup", out=tmp_path / "frozen", progress=False, overrides=["model.scale=0.0"])
    assert all(v.item() == 0 for v in _state(run / "last.pt").values())


def test_bf16_training_runs_on_cpu(prepared_phantom, tmp_path):
    run = train(prepared_phantom, "tiny", out=tmp_path / "run", overrides=["train.max_steps=2", "train.precision=bf16"],
                accelerator="cpu", progress=False)
    payload = load_weights(run / "last.pt")
    assert payload["step"] == 2 and payload["val_loss"] is not None and payload["val_loss"] == payload["val_loss"]
    assert all(v.dtype == torch.float32 for v in payload["state_dict"].values())  # bf16-mixed keeps fp32 weights


def test_method_without_parameters_trains_zero_steps(prepared_phantom, tmp_path):
    run = train(prepared_phantom, "intensity", out=tmp_path / "run", progress=False)
    payload = load_weights(run / "best.pt", "intensity")
    assert payload["step"] == 0 and payload["val_loss"] is None and payload["state_dict"] == {}
    assert not (run / "checkpoints").exists()


def test_weights_load_with_weights_only_and_build(prepared_phantom, tmp_path):
    run = train(prepared_phantom, "tiny", out=tmp_path / "run", overrides=["train.max_steps=1"], progress=False)
    raw = torch.load(run / "best.pt", weights_only=True)  # plain data
    assert raw["format"] == FORMAT and raw["mddpm_version"]
    module, payload = build_from_weights(run / "best.pt", "tiny")
    assert isinstance(module, TinyMethod) and not module.training
    assert all(torch.equal(module.state_dict()[k], v) for k, v in payload["state_dict"].items())


class _TouchOnLoad:
    """Unpickling this would create a file: proves a refused pickle is never executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_crafted_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "format_version": 1, "payload": _TouchOnLoad(marker)}, path)
    with pytest.raises(MddpmError, match="refused to load"):
        load_weights(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"format": FORMAT}))  # a bare pickle, not a torch file
    with pytest.raises(MddpmError, match=str(path.name)):
        load_weights(path)
    with pytest.raises(MddpmError, match="not found"):
        load_weights(tmp_path / "missing.pt")


def test_weights_of_another_method_or_version_are_refused(tmp_path):
    cfg = {"method": "tiny", "preset": "demo", "model": {}, "train": {}, "data": {}}
    path = save_weights(tmp_path / "w.pt", "tiny", cfg, TinyMethod().state_dict(), 5, 0.25)
    assert load_weights(path, "tiny")["val_loss"] == 0.25
    with pytest.raises(MddpmError, match="weights of method 'tiny', expected 'vae'"):
        load_weights(path, "vae")
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "format_version": 99}, tmp_path / "v99.pt")
    with pytest.raises(MddpmError, match="format version 99"):
        load_weights(tmp_path / "v99.pt")
    torch.save({"state_dict": payload["state_dict"]}, tmp_path / "foreign.pt")
    with pytest.raises(MddpmError, match="not an mddpm weights file"):
        load_weights(tmp_path / "foreign.pt")
    torch.save({**payload, "state_dict": TinyMethod(channels=2).state_dict()}, tmp_path / "shape.pt")
    with pytest.raises(MddpmError, match="do not fit"):
        build_from_weights(tmp_path / "shape.pt")


def test_cli_train(prepared_phantom, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(prepared_phantom), "--method", "tiny", "--out", str(run), "--set",
            "train.max_steps=1", "--no-progress", "--accelerator", "cpu"]
    assert main(args) == 0
    assert load_weights(run / "best.pt")["step"] == 1
    assert "s/step" in capsys.readouterr().out
    assert main(args) == 2
    assert "already exists (use --force" in capsys.readouterr().err
    assert main(args + ["--set", "train.nope=1", "--force"]) == 2
    assert "train.nope: unknown key" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=2", "--no-progress"]) == 0
    assert load_weights(run / "last.pt")["step"] == 2


@pytest.mark.slow  # two spawned processes import torch and Lightning
def test_ddp_two_cpu_processes(prepared_phantom, tmp_path):
    """Two gloo processes: each rank draws its own batches, so the averaged gradient (and the weights)
    differ from a one-process run of the same config."""
    settings = ["train.max_steps=2", "train.val_every=2"]
    single = train(prepared_phantom, "tiny", out=tmp_path / "single", overrides=settings, accelerator="cpu",
                   progress=False)
    ddp = train(prepared_phantom, "tiny", out=tmp_path / "ddp", overrides=settings, accelerator="cpu", devices=2,
                strategy="ddp_spawn", progress=False)
    a, b = _state(single / "last.pt"), _state(ddp / "last.pt")
    assert load_weights(ddp / "last.pt")["step"] == 2 and load_weights(ddp / "best.pt")["val_loss"] is not None
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_ddp_with_several_optimisers_tolerates_unused_parameters():
    # a GAN's critic step leaves the generator without gradients: plain DDP raises on the next step
    # (measured: fanogan with strategy="ddp_spawn" fails; `mddpm train --devices 2` trains)
    from mddpm.training.train import _ddp_strategy

    assert _ddp_strategy("auto", 2, 1, "cpu", optimizers=3) == "ddp_find_unused_parameters_true"
    assert _ddp_strategy("auto", 1, 2, "cpu", optimizers=2) == "ddp_find_unused_parameters_true"
    assert _ddp_strategy("auto", 2, 1, "cpu", optimizers=1) == "auto"
    assert _ddp_strategy("auto", 1, 1, "cpu", optimizers=3) == "auto"
    assert _ddp_strategy("auto", "auto", 1, "cpu", optimizers=3) == "auto"  # "auto" on the CPU is one process
    assert _ddp_strategy("ddp_spawn", 2, 1, "cpu", optimizers=3) == "ddp_spawn"  # an explicit choice is kept


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_training_shows_the_rich_bar_only_on_a_terminal(prepared_phantom, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdout", _Terminal())
    monkeypatch.setattr(sys, "stderr", _Terminal())
    train(prepared_phantom, "tiny", out=tmp_path / "shown", overrides=["train.max_steps=2"])
    assert "Epoch 0" in sys.stderr.getvalue() and "━" in sys.stderr.getvalue()  # rich's bar; tqdm draws with █
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file: no bar
    train(prepared_phantom, "tiny", out=tmp_path / "logged", overrides=["train.max_steps=2"])
    assert "Epoch" not in sys.stderr.getvalue()


def test_losses_are_read_from_the_run_log_with_steps_done(prepared_phantom, tmp_path):
    run = train(prepared_phantom, "tiny", out=tmp_path / "run", overrides=["train.max_steps=4"], progress=False)
    losses = RunFolder(run).read_losses()  # TINY_TRAIN: a training loss every step, validation every 2 steps
    assert [step for step, _ in losses["train/loss"]] == [1, 2, 3, 4]
    assert [step for step, _ in losses["val/loss"]] == [2, 4]
    logged = [float(r["val/loss"]) for r in _metrics(run) if r["val/loss"]]
    assert [value for _, value in losses["val/loss"]] == logged
    assert RunFolder(tmp_path / "no-run").read_losses() is None
