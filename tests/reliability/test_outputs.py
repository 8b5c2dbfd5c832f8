"""``--force`` replaces only what the command wrote, at the depth it wrote it, and ``train --resume`` writes
nowhere a symbolic link would lead it: reproduced on a trained run, with
checkpoints and logs (the corpus's ``nested-force`` row has the same for every command, on a run that has none)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mddpm.cli.main import main

from .helpers import TINY, error_line, files_of


def test_train_force_keeps_user_files_below_checkpoints_and_logs(trained, tmp_path, capsys):
    dataset, run, _, _ = trained
    out = tmp_path / "o"
    shutil.copytree(run, out)
    shutil.copy(out / "checkpoints/best.ckpt", out / "checkpoints/best_BACKUP.ckpt")
    (out / "logs/my_analysis").mkdir()
    (out / "logs/my_analysis/notes.txt").write_text("notes\n")
    before = files_of(out)
    capsys.readouterr()
    assert main(["train", "--data", str(dataset), "--out", str(out), "--force", *TINY]) == 2
    line = error_line(capsys, "train")
    assert "holds 2 file(s) mddpm did not write there (e.g. checkpoints/best_BACKUP.ckpt)" in line
    assert files_of(out) == before
    # without them, --force replaces the earlier run: every file the training wrote is one it owns
    (out / "checkpoints/best_BACKUP.ckpt").unlink()
    shutil.rmtree(out / "logs/my_analysis")
    assert main(["train", "--data", str(dataset), "--out", str(out), "--force", *TINY]) == 0
    assert _names(out) == _names(run)  # the earlier tensorboard events file went: a new one is there


def _names(folder: Path) -> set[str]:
    """The files under ``folder``, tensorboard's events files (named after the time, host and pid) as one."""
    return {re.sub(r"tfevents\..*", "tfevents.*", name) for name in files_of(folder)}


def test_evaluate_force_keeps_user_files_and_replaces_its_own(trained, tmp_path, capsys):
    _, _, val, test = trained
    out = tmp_path / "eval"
    argv = ["evaluate", str(test), "--val", str(val), "--out", str(out), "--figures", "1", "--write-segmentations",
            "--no-progress"]
    assert main(argv) == 0
    ours = files_of(out)
    figure = next(name for name in ours if name.startswith("figures/"))
    (out / "figures/case008_edited.png").write_bytes(ours[figure])  # an edited figure, under a name of the user's
    (out / "segmentations/manual").mkdir()
    (out / "segmentations/manual/expert_corrected.nii.gz").write_bytes(ours[next(
        name for name in ours if name.startswith("segmentations/"))])
    before = files_of(out)
    capsys.readouterr()
    assert main([*argv, "--force"]) == 2
    line = error_line(capsys, "evaluate")
    assert "holds 2 file(s) mddpm did not write there (e.g. figures/case008_edited.png)" in line
    assert files_of(out) == before
    # a file of ours, edited, is replaced
    (out / "figures/case008_edited.png").unlink()
    shutil.rmtree(out / "segmentations/manual")
    (out / figure).write_bytes(b"edited by hand")
    assert main([*argv, "--force"]) == 0
    assert files_of(out)[figure] == ours[figure] and set(files_of(out)) == set(ours)


@pytest.mark.parametrize("link", ["logs", "logs/csv", "checkpoints/last.ckpt"])
def test_resume_refuses_a_link_where_training_writes(trained, tmp_path, capsys, link):
    dataset, run, _, _ = trained
    out, elsewhere = tmp_path / "o", tmp_path / "elsewhere"
    shutil.copytree(run, out)
    shutil.move(out / link, elsewhere)
    (out / link).symlink_to(elsewhere)
    before, outside = files_of(out), files_of(tmp_path)
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--set", "train.max_steps=4", "--accelerator", "cpu",
                 "--no-progress"]) == 2
    assert f"o/{link}: a symbolic link where mddpm writes" in error_line(capsys, "train")
    assert files_of(out) == before and files_of(tmp_path) == outside
    # --force refuses a linked folder as foreign; a linked file of its own it unlinks (never writing through it)
    folder = elsewhere.is_dir()
    assert main(["train", "--data", str(dataset), "--out", str(out), "--force", *TINY]) == (2 if folder else 0)
    if folder:
        assert f"e.g. {link})" in error_line(capsys, "train")
    assert not (out / link).is_symlink() or folder
    assert {k: v for k, v in files_of(tmp_path).items() if not k.startswith("o/")} == \
        {k: v for k, v in outside.items() if not k.startswith("o/")}
