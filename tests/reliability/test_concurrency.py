"""One writer per folder: while another process holds a folder's lock, every writing command refuses it in
one line (exit 2) and changes nothing; a lock left by a killed process is taken over with a note."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mddpm.cli.main import main
from mddpm.folder_lock import LOCK_NAME, FolderLock

from .helpers import TINY, error_line, files_of

HOLD = "import sys; from mddpm.folder_lock import FolderLock\nwith FolderLock(sys.argv[1]):\n" \
       "    print('held', flush=True); sys.stdin.read()"


def _hold(folder: Path) -> subprocess.Popen:
    """A second process holding ``folder``'s lock until its stdin closes."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def _commands(trained, out: Path) -> dict[str, list[str]]:
    dataset, run, val, test = trained
    scan, mask = dataset / "images" / "case008_0000.nii.gz", dataset / "masks" / "case008.nii.gz"
    return {
        "train": ["train", "--data", str(dataset), "--out", str(out), *TINY],
        "train --resume": ["train", "--out", str(out), "--resume", "--accelerator", "cpu", "--no-progress"],
        "predict": ["predict", str(run), "--data", str(dataset), "--split", "lesion_val", "--out", str(out),
                    "--device", "cpu", "--no-progress"],
        "evaluate": ["evaluate", str(test), "--val", str(val), "--out", str(out), "--no-progress"],
        "detect": ["detect", str(scan), "--model", str(run), "--mask", str(mask), "--threshold", "0.5",
                   "--out", str(out),
                   "--device", "cpu", "--no-progress"],
    }


@pytest.mark.parametrize("command", ["train", "train --resume", "predict", "evaluate", "detect"])
def test_a_second_writer_is_refused_in_one_line(trained, tmp_path, capsys, command):
    out = tmp_path / "out"
    if command == "train --resume":
        import shutil

        shutil.copytree(trained[1], out)
    argv = _commands(trained, out)[command]
    holder = _hold(out)
    try:
        before = files_of(out)
        capsys.readouterr()
        assert main([*argv, *(["--force"] if command != "train --resume" else [])]) == 2
        line = error_line(capsys, argv[0])
        assert f"{out}: in use by pid {holder.pid} on " in line and f"delete {out / LOCK_NAME}" in line
        assert files_of(out) == before
    finally:
        holder.stdin.close()
        holder.wait()
    assert not (out / LOCK_NAME).exists()  # released by its holder
    if command != "train --resume":
        assert not out.exists()  # the holder made the folder for its lock, and nothing else came into it
    assert main(argv) == 0  # now it runs
    assert not (out / LOCK_NAME).exists()


def test_a_killed_writers_lock_is_taken_over_with_a_note(trained, tmp_path, capsys):
    out = tmp_path / "out"
    holder = _hold(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (out / LOCK_NAME).is_file()  # a killed process cannot remove its lock
    capsys.readouterr()
    assert main(_commands(trained, out)["evaluate"]) == 0
    note = [line for line in capsys.readouterr().err.splitlines() if "taking its lock over" in line]
    assert len(note) == 1 and f"{out}: in use by pid {holder.pid}" in note[0]
    assert (out / "metrics.json").is_file() and not (out / LOCK_NAME).exists()


def test_a_writer_that_fails_early_leaves_no_folder(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(ZeroDivisionError), FolderLock(out):
        assert (out / LOCK_NAME).is_file()
        1 / 0
    assert not out.exists()
