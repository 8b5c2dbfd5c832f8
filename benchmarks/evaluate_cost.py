"""What ``mddpm evaluate`` costs, end to end as a user runs it, in two source trees side by side (e.g. before
and after a change): median wall seconds and peak resident memory of the subprocess.

    python benchmarks/evaluate_cost.py --tree before=/path/to/old/checkout --tree after=. --volumes 40 \\
        --args "--examples 3"

Each tree's ``src`` is put first on ``PYTHONPATH`` of its subprocess. Inputs are those of
``eval_speed.py``: seeded dense maps on the paper grid (96×96×50), ``--volumes`` val + as many test
volumes. Runs are interleaved, ``--repeats`` times per tree. Writes ``--out`` .md and .json with the
command, the machine and the commit.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from eval_speed import write_dataset
from machine import REPO, machine_info, markdown_header, write_results


def run_once(tree: Path, folders: dict[str, Path], out: Path, extra: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one ``mddpm evaluate`` subprocess with ``tree``'s sources."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "mddpm.cli.main", "evaluate", str(folders["test"]), "--val", str(folders["val"]),
           "--out", str(out), "--force", "--no-progress", *extra]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"{tree}: mddpm evaluate failed:\n{child.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024  # Linux: kB


def to_markdown(result: dict) -> str:
    lines = markdown_header("mddpm evaluate, end to end, per source tree", result["machine"], result["command"])
    lines += [f"{result['volumes']} + {result['volumes']} dense maps (96×96×50), evaluate arguments "
              f"`{result['args'] or '(none)'}`; medians of {result['repeats']} interleaved runs.", "",
              "| tree | commit | wall s (median) | peak RSS MiB (median) |", "|---|---|---|---|"]
    for name, r in result["trees"].items():
        lines.append(f"| {name} | {r['commit'] or '?'} | {r['wall_s']:.2f} | {r['peak_rss_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def _commit(tree: Path) -> str | None:
    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", required=True, metavar="NAME=PATH", help="a source tree (repeatable)")
    p.add_argument("--volumes", type=int, default=40, help="val volumes, and as many test volumes (default 40)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--args", default="", help="extra arguments of mddpm evaluate, one string")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "evaluate_cost")
    args = p.parse_args(argv)
    trees = {name: Path(path).resolve() for name, _, path in (t.partition("=") for t in args.tree)}
    start, info = time.perf_counter(), machine_info()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        folders = write_dataset(Path(tmp) / "data", args.volumes, np.random.default_rng(args.seed))
        for _ in range(args.repeats):
            for name, tree in trees.items():
                times[name].append(run_once(tree, folders, Path(tmp) / f"eval-{name}", shlex.split(args.args)))
    result = {"command": shlex.join(["python", *sys.argv]), "machine": info, "volumes": args.volumes,
              "repeats": args.repeats, "args": args.args,
              "trees": {name: {"path": str(trees[name]), "commit": _commit(trees[name]),
                               "wall_s": statistics.median(s for s, _ in runs),
                               "peak_rss_mib": statistics.median(m for _, m in runs), "runs": runs}
                        for name, runs in times.items()}}
    write_results(result, info, args.out, to_markdown, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
