"""``mddpm bench``: deprecated spelling of the speed harness, ``python benchmarks/speed.py`` in the source tree."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from mddpm.errors import MddpmError

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "speed.py"  # src/mddpm/cli -> the checkout


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="deprecated: the speed harness is `python benchmarks/speed.py` in the source tree",
                       add_help=False)
    p.set_defaults(func=run, pass_through=True)


def run(args) -> int:
    print("mddpm bench: deprecated, running `python benchmarks/speed.py` (the speed harness left the library)",
          file=sys.stderr)
    if not SCRIPT.is_file():
        raise MddpmError(f"{SCRIPT}: not found; the speed harness comes with the source tree (git clone)")
    speed = runpy.run_path(str(SCRIPT))
    return speed["main"](args.rest)
