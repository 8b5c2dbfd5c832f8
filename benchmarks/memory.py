"""Peak memory of ``mddpm predict`` and ``mddpm evaluate`` for 10 and for 100 volumes.

Memory must stay bounded as the number of volumes grows: both commands stream one volume at a
time, so their peak resident set size (RSS) should be roughly flat from 10 to 100 volumes.

The script builds, in ``--work`` (default: a temporary folder), a phantom dataset of ellipsoid
"brains" with one bright blob "lesion" each (96x96x50 voxels of 2 mm = the 192x192x100 mm crop,
so the demo grid is 48x48x25 and the paper grid 96x96x50), with splits ``lesion_test_<N>`` and
``lesion_val_<N>`` of N volumes each (the smaller splits are subsets of the larger ones, and all
share one prepared cache). It prepares the cache once, then per method:

- ``intensity`` (0 training steps): isolates the pipeline (I/O, post-processing, metrics);
- ``tiny-diffusion``: ``mddpm-fpmcm`` with an 8-channel U-Net trained for 1 step: adds a network.

Every measurement is a fresh subprocess running the CLI (``mddpm.cli.main.main``); at exit the
child reads ``VmHWM`` (peak RSS), ``RssAnon`` and ``RssFile`` from ``/proc/self/status``; the
parent cross-checks with the child's own ``ru_maxrss`` (``os.wait4``). Results go to a Markdown
file (default ``benchmarks/results/memory.md``) with the command, machine, commit and date.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/memory.py [--work DIR] [--grid demo|paper]
        [--volumes 10 100] [--methods intensity tiny-diffusion] [--out benchmarks/results/memory.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from machine import REPO, git_commit, machine

SHAPE = (96, 96, 50)  # voxels (x, y, z) of 2 mm: exactly the 192x192x100 mm crop of both grids
SPACING_MM = 2.0  # the phantom's voxels
N_HEALTHY = 6  # 4 to train on, 1 to validate, 1 healthy test volume
STATUS_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")
SAMPLE_S = 0.005  # seconds between samples of RssAnon/RssFile in a measured child
METHODS = {
    "intensity": ["--method", "intensity"],
    "tiny-diffusion": ["--method", "mddpm-fpmcm", "--set", "model.net.model_channels=8",
                       "--set", "model.net.head_channels=8", "--set", "train.max_steps=1",
                       "--set", "train.batch_size=2", "--set", "train.val_every=1", "--set", "train.val_batches=1"],
}


def build_dataset(root: Path, n_lesion: int, seed: int = 0) -> dict[str, float]:
    """Write the phantom dataset (:func:`mddpm.data.synth.phantom.make_phantom_dataset`) of ``N_HEALTHY`` healthy
    and ``2 * n_lesion`` lesion volumes to ``root``; returns the seconds spent. The splits
    ``lesion_test_<n>``/``lesion_val_<n>`` are filled in by :func:`write_splits`."""
    from mddpm.data.synth.phantom import make_phantom_dataset

    start = time.perf_counter()
    make_phantom_dataset(root, shape=SHAPE, n_healthy=N_HEALTHY, n_anomalous=2 * n_lesion, seed=seed,
                         tool="benchmarks/memory.py")
    return {"seconds": time.perf_counter() - start}


def write_splits(root: Path, volumes: list[int]) -> None:
    """Add ``lesion_test_<n>``/``lesion_val_<n>``: the first ``n`` of ``lesion_test``/``lesion_val``."""
    from mddpm.data.dataset import save_dataset_json
    from mddpm.io import read_json

    meta = read_json(root / "dataset.json")
    splits = {f"lesion_{part}_{n}": meta["splits"][f"lesion_{part}"][:n] for n in volumes for part in ("test", "val")}
    if any(meta["splits"].get(name) != ids for name, ids in splits.items()):
        meta["splits"].update(splits)
        save_dataset_json(root, meta)


def measure(argv: list[str], work: Path, name: str) -> dict:
    """Run ``mddpm <argv>`` in a fresh subprocess; its peak RSS (MiB), memory at exit and wall time."""
    report = work / "measure" / f"{name}.json"
    log = work / "measure" / f"{name}.log"
    report.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(report), "--", *argv]
    start = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"mddpm {shlex.join(argv)} failed (exit {child.returncode}); see {log}:\n"
                         + log.read_text()[-2000:])
    result = json.loads(report.read_text())
    result.update(wall_s=wall, ru_maxrss_mib=usage.ru_maxrss / 1024, argv=argv)
    return result


def read_status() -> dict[str, float]:
    """The memory fields of ``/proc/self/status`` (``STATUS_FIELDS``), in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in STATUS_FIELDS:
            fields[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return fields


def run_child(report: Path, argv: list[str]) -> int:
    """Child mode: run the CLI in this process, then record its memory (MiB): ``VmHWM`` and the rest of
    ``/proc/self/status`` at exit, plus the peaks of ``RssAnon`` (heap) and ``RssFile`` (mapped files,
    e.g. the memory-mapped prepared cache) sampled every ``SAMPLE_S`` seconds by a thread."""
    from mddpm.cli.main import main

    peaks = {"RssAnon": 0.0, "RssFile": 0.0}
    done = threading.Event()

    def sample() -> None:
        while True:
            fields = read_status()
            for key in peaks:
                peaks[key] = max(peaks[key], fields.get(key, 0.0))
            if done.wait(SAMPLE_S):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = main(argv)
    done.set()
    sampler.join()
    report.write_text(json.dumps({"exit_code": code, **read_status(),
                                  **{f"peak_{k}": v for k, v in peaks.items()}}))
    return code


def markdown(results: dict, info: dict) -> str:
    volumes = info["volumes"]
    lo, hi = min(volumes), max(volumes)
    lines = ["# Peak memory of predict and evaluate vs number of volumes", "",
             f"- command: `{info['command']}`",
             f"- machine: {info['machine']['cpu']}, {info['machine']['cores']} cores "
             f"({info['machine']['usable_cores']} usable), {info['machine']['memory_gib']:.1f} GiB RAM; "
             f"load average at start {', '.join(f'{x:.1f}' for x in info['machine']['load_average_start'])}",
             f"- software: Python {info['machine']['python']}, torch {info['torch']}, "
             f"OMP_NUM_THREADS={info['omp_threads']}",
             f"- git commit: {info['commit']}",
             f"- date: {info['date']}",
             f"- data: phantoms {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} at {SPACING_MM:g} mm, prepared on the "
             f"`{info['grid']}` grid ({info['grid_shape']}); {2 * hi + N_HEALTHY} volumes in one "
             f"cache (built in {info['prepare_s']:.0f} s; dataset written in {info['dataset_s']:.0f} s)",
             "- each row is one fresh subprocess; peak RSS = `VmHWM` of the child (its `ru_maxrss` from "
             "`os.wait4` is in the second table); predict runs on the `lesion_test_<N>` split (val maps are predicted "
             "the same way, not listed); evaluate scores test N with thresholds from val N (both N volumes)",
             "", f"| method | stage | {lo} vols: peak RSS MiB | wall s | {hi} vols: peak RSS MiB | wall s "
             f"| ratio {hi}/{lo} (RSS) |", "|---|---|---|---|---|---|---|"]
    ratios = []
    for method, stages in results.items():
        for stage, by_n in stages.items():
            if stage == "predict val":
                continue
            a, b = by_n[lo], by_n[hi]
            ratio = b["VmHWM"] / a["VmHWM"]
            ratios.append(ratio)
            lines.append(f"| {method} | {stage} | {a['VmHWM']:.0f} | {a['wall_s']:.1f} | {b['VmHWM']:.0f} "
                         f"| {b['wall_s']:.1f} | {ratio:.3f} |")
    lines += ["", "Split of the peak (MiB): `RssAnon` = heap (numpy, torch, Python), `RssFile` = mapped files "
              f"(libraries, and the pages of the memory-mapped prepared cache that were read); peaks sampled "
              f"every {SAMPLE_S * 1000:g} ms in the child, so they can miss short spikes that `VmHWM` catches; "
              "`ru_maxrss` from `os.wait4` as a cross-check of `VmHWM`.", "",
              "| method | stage | volumes | VmHWM | ru_maxrss | peak RssAnon | peak RssFile | RssAnon at exit "
              "| RssFile at exit |", "|---|---|---|---|---|---|---|---|---|"]
    for method, stages in results.items():
        for stage, by_n in stages.items():
            for n in volumes:
                r = by_n[n]
                lines.append(f"| {method} | {stage} | {n} | {r['VmHWM']:.1f} | {r['ru_maxrss_mib']:.1f} "
                             f"| {r['peak_RssAnon']:.1f} | {r['peak_RssFile']:.1f} "
                             f"| {r['RssAnon']:.1f} | {r['RssFile']:.1f} |")
    mib = info["voxels_per_volume"] / 2**20
    touched = {"predict": ("image float32 + mask uint8 of each volume", 5 * mib),
               "predict val": ("image float32 + mask uint8 of each volume", 5 * mib),
               "evaluate": ("mask + label uint8 of each test and each val volume", 2 * 2 * mib)}
    lines += ["", f"Growth from {lo} to {hi} volumes (MiB). \"cache pages\" is what reading {hi - lo} more volumes "
              "of the memory-mapped prepared cache adds to `RssFile` (clean file pages, reclaimable by the "
              "kernel, but counted in RSS):", "",
              "| method | stage | VmHWM | peak RssAnon | peak RssFile | cache pages (expected) |",
              "|---|---|---|---|---|---|"]
    for method, stages in results.items():
        for stage, by_n in stages.items():
            a, b = by_n[lo], by_n[hi]
            what, per_volume = touched[stage]
            lines.append(f"| {method} | {stage} | {b['VmHWM'] - a['VmHWM']:+.1f} "
                         f"| {b['peak_RssAnon'] - a['peak_RssAnon']:+.1f} | "
                         f"{b['peak_RssFile'] - a['peak_RssFile']:+.1f} "
                         f"| {(hi - lo) * per_volume:+.1f} ({what}) |")
    worst = max(ratios)
    slope, where = max(((by_n[hi]["VmHWM"] - by_n[lo]["VmHWM"]) / (hi - lo), f"{method} {stage}")
                       for method, stages in results.items() for stage, by_n in stages.items())
    verdict = "bounded" if worst < 1.25 else "NOT bounded"
    lines += ["", f"**Verdict: {verdict}** — the largest peak-RSS ratio {hi} vols / {lo} vols is {worst:.3f} "
              f"(bounded = below 1.25 for 10x the volumes); the steepest growth is {slope:.2f} MiB per extra volume "
              f"({where}); the growth table splits it into heap and mapped cache pages.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary folder, removed)")
    parser.add_argument("--grid", choices=["demo", "paper"], default="demo", help="prepared grid (default: demo)")
    parser.add_argument("--volumes", type=int, nargs="+", default=[10, 100], help="split sizes (default: 10 100)")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/memory.md", help="Markdown result")
    parser.add_argument("--table-only", action="store_true",
                        help="rewrite --out from WORK/memory.json of an earlier run (needs --work)")
    args, rest = parser.parse_known_args()
    if args.child is not None:
        sys.exit(run_child(args.child, rest[1:] if rest[:1] == ["--"] else rest))
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    if args.table_only:
        if args.work is None:
            parser.error("--table-only needs --work")
        saved = json.loads((args.work / "memory.json").read_text())
        results = {m: {stage: {int(n): r for n, r in by_n.items()} for stage, by_n in stages.items()}
                   for m, stages in saved["results"].items()}
        args.out.write_text(markdown(results, saved["info"]))
        print(f"written to {args.out}")
        return
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    command = f"OMP_NUM_THREADS={omp} " + shlex.join(["python", "benchmarks/memory.py", *sys.argv[1:]])
    info = {"command": command, "omp_threads": omp, "machine": machine(), "commit": git_commit() or "unknown",
            "grid": args.grid,
            "volumes": sorted(set(args.volumes)),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if args.work is None:
        with tempfile.TemporaryDirectory(prefix="mddpm-memory-") as tmp:
            run_all(Path(tmp), args, info)
    else:
        args.work.mkdir(parents=True, exist_ok=True)
        run_all(args.work.resolve(), args, info)


def run_all(work: Path, args, info: dict) -> None:
    """Build the data, prepare, train and measure (see module docstring); write ``args.out``.

    This process never imports torch: a forked child's ``ru_maxrss`` counts the parent's resident
    pages until ``exec``, so a heavy parent would mask the children's peaks."""
    info["torch"] = importlib.metadata.version("torch")
    data = work / "data"
    volumes = info["volumes"]
    setup_times = work / "setup_seconds.json"  # first build times, kept when --work is reused
    times = json.loads(setup_times.read_text()) if setup_times.is_file() else {}
    if not (data / "dataset.json").is_file():
        print(f"writing {2 * max(volumes) + N_HEALTHY} phantom volumes to {data}", flush=True)
        times = {"dataset": build_dataset(data, max(volumes))["seconds"]}
    write_splits(data, volumes)
    start = time.perf_counter()
    measure(["prepare", str(data), "--grid", args.grid, "--workers", "2"], work, f"prepare-{args.grid}")
    times.setdefault(f"prepare-{args.grid}", time.perf_counter() - start)
    setup_times.write_text(json.dumps(times))
    info["dataset_s"], info["prepare_s"] = times["dataset"], times[f"prepare-{args.grid}"]
    cache = data / "prepared" / next(p.name for p in (data / "prepared").iterdir() if p.is_dir())
    info["grid_shape"] = cache.name
    info["voxels_per_volume"] = int(np.prod(np.load(cache / "masks.npy", mmap_mode="r").shape[1:]))
    print(f"prepared in {info['prepare_s']:.0f} s", flush=True)

    results: dict[str, dict[str, dict[int, dict]]] = {}
    for method in args.methods:
        run = work / "runs" / f"{method}-{args.grid}"
        train = ["train", "--data", str(data), "--preset", "demo", "--set", f"data.grid={args.grid}",
                 *METHODS[method], "--out", str(run), "--force", "--no-progress"]
        t = measure(train, work, f"train-{method}")
        print(f"{method}: trained in {t['wall_s']:.0f} s", flush=True)
        stages: dict[str, dict[int, dict]] = {"predict": {}, "predict val": {}, "evaluate": {}}
        for n in volumes:
            maps = {}
            for part, stage in (("test", "predict"), ("val", "predict val")):
                maps[part] = work / "maps" / method / f"{part}_{n}"
                stages[stage][n] = measure(["predict", str(run), "--data", str(data), "--split", f"lesion_{part}_{n}",
                                            "--out", str(maps[part]), "--device", "cpu", "--force", "--no-progress"],
                                           work, f"predict-{method}-{part}-{n}")
            stages["evaluate"][n] = measure(["evaluate", str(maps["test"]), "--val", str(maps["val"]),
                                             "--out", str(work / "eval" / method / str(n)), "--force"],
                                            work, f"evaluate-{method}-{n}")
            for stage in stages:
                r = stages[stage][n]
                print(f"{method} {stage} {n} vols: peak RSS {r['VmHWM']:.1f} MiB (ru_maxrss {r['ru_maxrss_mib']:.1f}),"
                      f" peak RssAnon {r['peak_RssAnon']:.1f}, peak RssFile {r['peak_RssFile']:.1f},"
                      f" {r['wall_s']:.1f} s", flush=True)
        results[method] = stages
    (work / "memory.json").write_text(json.dumps({"info": info, "results": results}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(results, info))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
