"""A full disk is one line, exit 2: "no space left on device while writing PATH (needs about N MB)", with no
temporary file left behind and nothing half-written. The disk is made full by making the system call that
would fill it fail with ENOSPC (a real 3 MB tmpfs gives the same lines; see docs/reliability.md)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from mddpm.cli.main import main

from .helpers import TINY, error_line, files_of


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_prepare_on_a_full_disk_names_the_cache_and_its_size(trained, tmp_path, capsys, monkeypatch):
    dataset = trained[0]
    cache = tmp_path / "cache"
    monkeypatch.setattr(os, "posix_fallocate", _no_space)  # writing a memory map there would be a SIGBUS
    capsys.readouterr()
    assert main(["prepare", str(dataset), "--grid", "paper", "--cache", str(cache), "--no-progress"]) == 2
    line = error_line(capsys, "prepare")
    assert "no space left on device while writing" in line and "96x96x50 (needs about " in line
    assert not [p for p in cache.rglob("*") if p.is_file()]  # the temporary build folder is gone


def test_train_refuses_a_disk_without_room_for_its_checkpoints(trained, tmp_path, capsys, monkeypatch):
    dataset = trained[0]
    out = tmp_path / "run"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    capsys.readouterr()
    assert main(["train", "--data", str(dataset), "--out", str(out), *TINY]) == 2
    line = error_line(capsys, "train")
    assert f"no space left on device while writing {out} (needs about " in line
    assert not out.exists()


def test_a_write_that_fills_the_disk_names_its_file_and_leaves_no_temporary(trained, tmp_path, capsys,
                                                                           monkeypatch):
    dataset, run, _, _ = trained
    out = tmp_path / "maps"
    replace = os.replace

    def replace_until_a_map(src, dst):
        if str(dst).endswith(".nii.gz"):
            _no_space()
        replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_until_a_map)
    capsys.readouterr()
    assert main(["predict", str(run), "--data", str(dataset), "--split", "lesion_val", "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 2
    line = error_line(capsys, "predict")
    assert f"no space left on device while writing {out}/recon/" in line
    assert not [name for name in files_of(out) if ".tmp" in name]  # the cut-short write left nothing
    monkeypatch.undo()
    # what was written is the started request only: the same command resumes it once there is room
    assert main(["predict", str(run), "--data", str(dataset), "--split", "lesion_val", "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 0
    assert (Path(out) / "predict.json").is_file()


@pytest.mark.parametrize("command", ["evaluate", "detect"])
def test_a_disk_that_fills_half_way_leaves_no_half_output(trained, tmp_path, capsys, monkeypatch, command):
    dataset, run, val, test = trained
    out = tmp_path / "out"
    argv = {"evaluate": ["evaluate", str(test), "--val", str(val), "--out", str(out), "--figures", "1",
                         "--no-progress"],
            "detect": ["detect", str(dataset / "images/case008_0000.nii.gz"), "--model", str(run), "--mask",
                       str(dataset / "masks/case008.nii.gz"), "--threshold", "0.5", "--out", str(out), "--device",
                       "cpu", "--no-progress"]}[command]
    replace = os.replace
    late = {"evaluate": ".png", "detect": "detect.json"}[command]  # written after the first outputs

    def full_late(src, dst):
        if str(dst).endswith(late):
            _no_space()
        replace(src, dst)

    monkeypatch.setattr(os, "replace", full_late)
    capsys.readouterr()
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith(f"mddpm {command}: error: ")]
    assert len(errors) == 1 and f"no space left on device while writing {out}" in errors[0]
    assert not out.exists()  # what it wrote before the disk filled is gone, and so is the folder it made
