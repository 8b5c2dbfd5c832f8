"""Interrupted training: a `mddpm train` subprocess stopped (Ctrl-C to its process group, SIGTERM, SIGKILL)
after its first checkpoint exits 130 or 143 with one line (SIGKILL: killed), and `--resume` then ends with
bit-for-bit the weights of an uninterrupted run (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mddpm.data.prepare import prepare_dataset
from mddpm.data.synth.phantom import make_phantom_dataset

EXE = str(Path(sys.executable).parent / "mddpm")
TINY = ["--method", "mddpm-fpmcm", "--set", "model.net.model_channels=8", "--set", "model.net.head_channels=8",
        "--set", "train.batch_size=2", "--set", "train.max_steps=40", "--set", "train.val_every=2",
        "--set", "train.val_batches=1", "--set", "train.log_every=1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _train(dataset: Path, run: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([EXE, "train", "--data", str(dataset), "--out", str(run), "--accelerator", "cpu",
                             "--no-progress", *TINY, *extra], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _weights(run: Path) -> dict:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def dataset_and_reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    dataset = make_phantom_dataset(root / "phantom")
    prepare_dataset(dataset, "demo", workers=1, progress=False)
    proc = _train(dataset, root / "reference")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return dataset, _weights(root / "reference")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["ctrl-c", "sigterm", "sigkill"])
def test_killed_run_resumes_to_the_uninterrupted_weights(dataset_and_reference, tmp_path, sig):
    dataset, reference = dataset_and_reference
    run = tmp_path / "run"
    proc = _train(dataset, run)
    ckpt = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not ckpt.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be interrupted: raise train.max_steps"
    os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C does: to the whole process group
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        said = "interrupted" if sig == signal.SIGINT else "stopped by SIGTERM"
        last = err.strip().splitlines()[-1]
        assert proc.returncode == (130 if sig == signal.SIGINT else 143), err[-2000:]
        assert last.startswith(f"mddpm train: {said} at step ") and last.endswith(f"{run} continues with --resume")
        assert "Traceback" not in err
    step = torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < step < 40

    resumed = subprocess.run([EXE, "train", "--out", str(run), "--resume", "--accelerator", "cpu", "--no-progress"],
                             env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    weights = _weights(run)
    assert weights["step"] == reference["step"] == 40
    assert weights["state_dict"].keys() == reference["state_dict"].keys()
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(weights["state_dict"][name], tensor), name
