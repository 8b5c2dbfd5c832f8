"""No command can be pointed at its own input (a dataset, a run, a maps folder, a folder of scans), or at a
folder above it, as its output: one line, exit 2, nothing changed, with or without --force."""

from __future__ import annotations

import pytest

from mddpm.cli.main import main

from .helpers import TINY, error_line, files_of


def _argv(trained, where: str) -> tuple[list[str], str]:
    """A command whose --out is one of its inputs (``where``), and the input's words in the message."""
    dataset, run, val, test = trained
    predict = ["predict", str(run), "--data", str(dataset), "--split", "lesion_val", "--device", "cpu",
               "--no-progress"]
    evaluate = ["evaluate", str(test), "--val", str(val), "--no-progress"]
    return {
        "train into its dataset": (["train", "--data", str(dataset), *TINY, "--out", str(dataset)], "the dataset"),
        "predict into its run": ([*predict, "--out", str(run)], "the run"),
        "predict into its dataset": ([*predict, "--out", str(dataset)], "the dataset root"),
        "predict above its run": ([*predict, "--out", str(run.parent)], "a folder above the run"),
        "evaluate into its test maps": ([*evaluate, "--out", str(test)], "the test maps"),
        "evaluate into its val maps": ([*evaluate, "--out", str(val)], "the val maps"),
        "detect into its folder of scans": (["detect", str(dataset / "images"), "--model", str(run), "--mask",
                                            str(dataset / "masks"), "--threshold", "0.5", "--device", "cpu",
                                            "--no-progress", "--out", str(dataset / "images")], "the scan"),
    }[where]


@pytest.mark.parametrize("where", ["train into its dataset", "predict into its run", "predict into its dataset",
                                   "predict above its run", "evaluate into its test maps",
                                   "evaluate into its val maps", "detect into its folder of scans"])
@pytest.mark.parametrize("force", [False, True], ids=["", "force"])
def test_an_input_is_never_the_output(trained, capsys, where, force):
    argv, words = _argv(trained, where)
    root = trained[1].parent
    before = files_of(root)
    capsys.readouterr()
    assert main([*argv, *(["--force"] if force else [])]) == 2
    line = error_line(capsys, argv[0])
    assert f"is {words} this command reads" in line and "choose another output folder" in line
    assert files_of(root) == before
