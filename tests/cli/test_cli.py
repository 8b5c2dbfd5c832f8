"""The command line starts fast: building the parser imports none of the heavy libraries."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "lightning", "numpy", "scipy", "SimpleITK", "nibabel")


def test_building_the_parser_imports_no_heavy_library():
    code = ("import sys; from mddpm.cli.main import build_parser; build_parser(); "
            f"print(' '.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_version_and_help_print_without_running_a_command(capsys):
    from mddpm import __version__
    from mddpm.cli.main import main

    for argv, expected in ((["--version"], f"mddpm {__version__}"), (["--help"], "COMMAND")):
        try:
            main(argv)
        except SystemExit as e:
            assert e.code == 0
        assert expected in capsys.readouterr().out


def test_every_long_running_command_can_turn_progress_off():
    import argparse

    from mddpm.cli.main import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    long_running = ["demo", "synth", "verify", "preprocess", "prepare", "train", "predict", "evaluate", "detect",
                    "benchmark"]
    assert [c for c in long_running if "--no-progress" not in commands[c]._option_string_actions] == []
