"""Entry point of the ``mddpm`` console script.

Each subcommand lives in ``mddpm/cli/<name>.py`` and defines ``add_parser(subparsers)``, which
registers the subcommand with ``func=run`` as its default. Errors of type
:class:`~mddpm.errors.MddpmError` become one line on stderr and exit code 2; Ctrl-C (at any moment, start-up
included) one line and exit code 130, SIGTERM one line and 143, both after the clean-up of the step they
stopped (a training's line says where ``--resume`` continues from: Lightning saves a checkpoint first).
"""

from __future__ import annotations

import errno
import importlib
import sys

from mddpm._version import __version__
from mddpm.errors import DiskFull, MddpmError, Terminated, one_line

COMMANDS = [
    "demo", "synth", "verify", "import_pddpm", "preprocess", "prepare", "train", "predict",
    "evaluate", "detect", "benchmark", "list",
]


def build_parser():
    """The ``argparse`` parser of every subcommand."""
    import argparse  # here, like every other import a command needs: Ctrl-C during them is one line

    parser = argparse.ArgumentParser(
        prog="mddpm",
        description="Unsupervised lesion detection in brain MRI with masked diffusion models.",
    )
    parser.add_argument("--version", action="version", version=f"mddpm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"mddpm.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    command = ""
    try:
        from mddpm.parallel import sigterm_raises

        with sigterm_raises():
            parser = build_parser()
            args, rest = parser.parse_known_args(_negative_values(sys.argv[1:] if argv is None else argv))
            if rest and not getattr(args, "pass_through", False):  # only a deprecated alias hands arguments on
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            args.rest = rest
            if not getattr(args, "func", None):
                parser.print_help()
                return 0
            command = args.command
            return _run(args)
    except KeyboardInterrupt as e:  # Terminated: SIGTERM (mddpm.parallel.sigterm_raises)
        stopped = str(e) or ("stopped by SIGTERM" if isinstance(e, Terminated) else "interrupted")
        print(f"mddpm{' ' + command if command else ''}: {stopped}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130


def _negative_values(argv: list[str]) -> list[str]:
    """``--option -1e308`` as ``--option=-1e308``: argparse reads a negative number in scientific notation as an
    option (only ``-5`` and ``-0.5`` count as numbers for it)."""
    out, i = [], 0
    while i < len(argv):
        if argv[i].startswith("--") and "=" not in argv[i] and i + 1 < len(argv) and _negative_number(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _negative_number(text: str) -> bool:
    if not text.startswith("-"):
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def _run(args) -> int:
    try:
        return int(args.func(args) or 0)
    except MddpmError as e:
        return _fail(args.command, str(e))
    except OSError as e:  # the environment: permissions, a full disk, a dangling or looping link
        if e.errno == errno.ENOSPC:
            return _fail(args.command, str(DiskFull(e.filename or "the output folder")))
        return _fail(args.command, f"{e.filename}: {e.strerror}" if e.filename else str(e))
    except RuntimeError as e:
        if not str(e).startswith("Symlink loop"):  # pathlib's way of saying ELOOP
            raise
        return _fail(args.command, str(e))


def _fail(command: str, message: str) -> int:
    """Print the one-line error (a newline inside a path is shown as \\n) and return exit code 2."""
    print(f"mddpm {command}: error: {one_line(message)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
