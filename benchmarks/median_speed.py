"""The exact 5³ median: scipy's ``median_filter`` (the released code's call) against mddpm's paths.

One command (about a minute on a quiet 2-core machine):

    PYTHONPATH=src python benchmarks/median_speed.py

Times, on seeded dense maps (non-zero over a brain-shaped half of the volume, as real anomaly
maps are) of the paper grid 96×96×50 and the demo grid 48×48×25, with 1 and 2 threads (torch's
thread count, and the compiled kernel's, which splits the volume's planes between its threads;
scipy is single-threaded): ``scipy.ndimage.median_filter(size=5, mode="reflect")``, the fused
compiled networks (the CPU default) and the torch-op networks (``use_torch``, the path of other
devices), called in turn ``--repeats`` times (medians). Every output is checked identical to
scipy's. The kernel's compile time is measured separately in two fresh subprocesses sharing an
empty numba cache folder: the first call there compiles (cold), the second loads the cache (as
every later CLI call does). Writes ``--out`` .md and .json with the command, machine, commit and
load average.
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
import torch
from scipy import ndimage

from eval_speed import volume
from machine import REPO, machine_info, markdown_header, write_results
from mddpm.evaluation.postprocess import erode_mask_axial
from mddpm.kernels.median import median_filter_3d

FIRST_CALL = """
import time
t0 = time.perf_counter()
import torch
from mddpm.kernels.median import median_filter_3d
t1 = time.perf_counter()
median_filter_3d(torch.rand(50, 96, 96))
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def dense_map(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A masked dense anomaly map of ``shape`` [Z, H, W] (the paper-grid map of eval_speed, resized)."""
    score, mask, _ = volume(rng, "dense")
    masked = (torch.from_numpy(score) * erode_mask_axial(torch.from_numpy(mask), 3)).numpy()
    if masked.shape != shape:
        masked = ndimage.zoom(masked, [t / s for t, s in zip(shape, masked.shape)], order=1)
    return np.ascontiguousarray(masked, dtype=np.float32)


def time_paths(x: np.ndarray, repeats: int, threads: int) -> dict:
    """Median seconds of each path on ``x``, called in turn; and whether each equals scipy's output.
    ``threads``: the fused kernel's (torch's thread count is set by the caller)."""
    t = torch.from_numpy(x)
    paths = {"scipy": lambda: ndimage.median_filter(x, size=5, mode="reflect"),
             "fused": lambda: median_filter_3d(t, threads=threads).numpy(),
             "torch ops": lambda: median_filter_3d(t, use_torch=True).numpy()}
    want = paths["scipy"]()
    same = {name: bool(np.array_equal(f(), want)) for name, f in paths.items()}
    times = {name: [] for name in paths}
    for _ in range(repeats):
        for name, f in paths.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    return {name: {"seconds": statistics.median(v), "identical": same[name]} for name, v in times.items()}


def compile_times() -> dict:
    """Seconds of the first median call in a fresh process: with an empty numba cache, then with it filled."""
    out = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as cache:
        env["NUMBA_CACHE_DIR"] = cache
        for name in ("cold cache (compiles)", "warm cache"):
            done = subprocess.run([sys.executable, "-c", FIRST_CALL], capture_output=True, text=True, env=env)
            if done.returncode != 0:
                sys.exit(f"first-call subprocess failed:\n{done.stderr[-2000:]}")
            imports, first = (float(v) for v in done.stdout.split())
            out[name] = {"import_s": imports, "first_call_s": first}
    return out


def to_markdown(result: dict) -> str:
    lines = markdown_header("Exact 5³ median: scipy (released call) vs mddpm", result["machine"],
                            result["command"])
    lines += [f"Medians of {result['repeats']} interleaved calls; dense maps (non-zero over the brain). "
              "Speed-up = scipy / path; \"identical\" = same array as scipy.", "",
              "| grid (Z×H×W) | threads | path | time | speed-up vs scipy | identical |", "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        scipy_s = row["paths"]["scipy"]["seconds"]
        for name, r in row["paths"].items():
            lines.append(f"| {row['grid']} | {row['threads']} | {name} | {r['seconds'] * 1e3:,.1f} ms | "
                         f"{scipy_s / r['seconds']:.1f}× | {r['identical']} |")
    lines += ["", "First call in a fresh process (96×96×50; import of torch and mddpm's median, then the call):", "",
              "| numba cache | import | first call |", "|---|---|---|"]
    for name, r in result["compile"].items():
        lines.append(f"| {name} | {r['import_s']:.2f} s | {r['first_call_s']:.2f} s |")
    lines += ["", f"Wall time of this script: {result['wall_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "median_speed",
                   help="output path without suffix (.md and .json are written)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    start = time.perf_counter()
    info = machine_info()
    rng = np.random.default_rng(args.seed)
    maps = {"50×96×96": dense_map((50, 96, 96), rng), "25×48×48": dense_map((25, 48, 48), rng)}
    result = {"command": shlex.join(["python", *sys.argv]), "machine": info, "repeats": args.repeats, "rows": []}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for grid, x in maps.items():
            result["rows"].append({"grid": grid, "threads": threads, "paths": time_paths(x, args.repeats, threads)})
    result["compile"] = compile_times()
    write_results(result, info, args.out, to_markdown, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
