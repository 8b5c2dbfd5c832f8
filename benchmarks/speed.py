"""Speed harness: time every stage (training step, noise, masking, predict, post-processing, metrics,
threshold search, bf16 parity) on this machine; write OUT.json and OUT.md with the machine and command.

    OMP_NUM_THREADS=2 python benchmarks/speed.py [--device cuda] [--stages ...] [--out benchmarks/results/speed_cpu]

It lives outside the library (it times the library); ``mddpm bench`` is a deprecated spelling of it.
The stages are in ``speed_model.py`` (training step, noise and masking, predict) and
``speed_scoring.py`` (post-processing, threshold search, bf16 parity).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from machine import machine_info
from mddpm.device import resolve_device
from mddpm.errors import MddpmError
from mddpm.io import atomic_write, check_new_output, write_json
from speed_model import BenchSettings, bench_noise_masking, bench_predict, bench_train
from speed_scoring import bench_bf16_parity, bench_postprocess, bench_threshold

STAGES = ("noise_masking", "train", "predict", "postprocess", "threshold", "bf16_parity")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/speed.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/speed_cpu",
                   help="output path without extension: writes OUT.json and OUT.md (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=None, help="stages to run (default: all)")
    p.add_argument("--presets", nargs="+", default=["demo", "paper"], help="presets of the train/predict stages")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median reported)")
    p.add_argument("--paper-repeats", type=int, default=1, help="repeats of paper-preset steps on the CPU")
    p.add_argument("--paper-batch", type=int, default=None,
                   help="training batch of the paper preset (default: 32 on a GPU, 1 on the CPU)")
    p.add_argument("--paper-slices", type=int, default=None,
                   help="slices of the paper volume actually timed in predict (default: all 50 on a GPU, "
                        "1 on the CPU; the time is scaled to 50)")
    p.add_argument("--pooled-volumes", type=int, default=100, help="volumes pooled for the threshold search")
    p.add_argument("--run", default=None, help="trained run for the bf16 parity check (needs --data)")
    p.add_argument("--data", default=None, help="dataset of --run")
    p.add_argument("--compile", action="store_true", help="also time the demo training step under torch.compile")
    p.add_argument("--force", action="store_true", help="overwrite existing OUT.json / OUT.md")
    return p



def main(argv: list[str] | None = None) -> int:
    """Run the harness; a bad option or an existing output is one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args, argv if argv is not None else sys.argv[1:])
    except MddpmError as e:
        print(f"benchmarks/speed.py: error: {e}", file=sys.stderr)
        return 2


def _run(args, argv: list[str]) -> int:
    out = Path(args.out)
    json_path, md_path = out.with_name(out.name + ".json"), out.with_name(out.name + ".md")
    check_new_output(json_path, args.force)
    check_new_output(md_path, args.force)
    if args.repeats < 1 or args.paper_repeats < 1 or args.pooled_volumes < 1:
        raise MddpmError("--repeats, --paper-repeats and --pooled-volumes must be positive")
    if (args.run is None) != (args.data is None):
        raise MddpmError("--run and --data go together (the parity check scores the run on the dataset)")
    on_cpu = resolve_device(args.device).type == "cpu"
    settings = BenchSettings(
        device=args.device, threads=args.threads, presets=tuple(args.presets), repeats=args.repeats,
        paper_repeats=args.paper_repeats,
        batch={"paper": args.paper_batch or (1 if on_cpu else 32)},
        predict_slices={"paper": args.paper_slices or (1 if on_cpu else 50)},
        pooled_volumes=args.pooled_volumes, run=args.run, data=args.data, compile=args.compile)
    results = run_bench(settings, tuple(args.stages) if args.stages else None)
    command = "python benchmarks/speed.py " + " ".join(shlex.quote(a) for a in argv)
    results["command"] = command
    write_json(json_path, results)
    with atomic_write(md_path) as tmp:
        tmp.write_text(to_markdown(results, command))
    print(f"wrote {json_path} and {md_path}")
    return 0


def run_bench(settings: BenchSettings, stages: tuple[str, ...] | None = None,
              say: Callable[[str], None] = print) -> dict:
    """Run the stages (all by default) and return the results dict (machine, settings, stages)."""
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    stage_functions = {"train": bench_train, "predict": bench_predict, "noise_masking": bench_noise_masking,
                       "postprocess": bench_postprocess, "threshold": bench_threshold, "bf16_parity": bench_bf16_parity}
    stages = stages or STAGES
    results = {"machine": machine_info(device), "settings": asdict(settings), "stages": {}}
    for stage in stages:
        say(f"bench: {stage} (load average {os.getloadavg()[0]:.1f})")
        start = time.perf_counter()
        fn = stage_functions[stage]
        if stage in ("train", "predict"):
            value = {p: fn(p, settings, device) for p in settings.presets}
        else:
            value = fn(settings, device)
        value = {"wall_s": time.perf_counter() - start, "load_average_1min": os.getloadavg()[0], "result": value}
        results["stages"][stage] = value
    results["machine"]["load_average_end"] = list(os.getloadavg())
    return results


def _f(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:.0f}"
        return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{digits}f}".rstrip("0").rstrip(".")
    return str(x)


def _ms(s) -> str:
    return "–" if s is None else f"{1000 * s:.1f} ms" if s < 1 else f"{s:.2f} s"


def to_markdown(results: dict, command: str | None = None) -> str:
    """A Markdown report of ``run_bench`` results (machine, command, one table per stage)."""
    m, st = results["machine"], results["stages"]
    lines = ["# mddpm speed (benchmarks/speed.py)", "",
             f"- device: {m['device']} ({m['device_name']}); CPU {m['cpu']}, {m['cores']} cores, "
             f"torch threads {m['torch_threads']}, OMP_NUM_THREADS={m['omp_num_threads']}",
             f"- torch {m['torch']}, mddpm {m['mddpm']}, git {m['git_commit']}",
             f"- load average (1/5/15 min) at start {', '.join(f'{x:.1f}' for x in m['load_average_start'])}, "
             f"at end {', '.join(f'{x:.1f}' for x in m.get('load_average_end', []))}"]
    if command:
        lines.append(f"- command: `{command}`")
    lines.append("- every time is the median of the repeats after warm-up")
    if "train" in st:
        lines += ["", "## Training step", "",
                  "| preset | batch | step | precision | time | slices/s | TFLOP/s | vs bare net | % bf16 peak |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for preset, r in st["train"]["result"].items():
            for key, v in r["steps"].items():
                name = key.split("/")[0]
                over = v.get("overhead_vs_bare")
                lines.append(f"| {preset} ({r['size']}², {r['gflop_per_step']:.0f} GFLOP/step) | {r['batch']} | {name} "
                             "| "
                             f"{v['precision']} | {_ms(v['median_s'])} | {_f(v['slices_per_s'])} | {v['tflops']:.4f} | "
                             f"{'–' if over is None else f'{100 * over:+.1f} %'} | {_f(v.get('percent_of_bf16_peak'))} "
                             "|")
            if "compile" in r:
                c = r["compile"]
                text = c["error"] if "error" in c else (f"first call {c['first_call_s']:.1f} s, then "
                                                        f"{_ms(c['median_s'])} per step (eager fp32 "
                                                        f"{_ms(r['steps']['mddpm-released/32']['median_s'])})")
                lines.append(f"\ntorch.compile ({preset}, mddpm-released, fp32): {text}")
    if "noise_masking" in st:
        r = st["noise_masking"]["result"]
        lines += ["", f"## Noise and masking ({r['size']}×{r['size']}, batch {r['batch']})", "",
                  "| operation | time | published code | speed-up |", "|---|---|---|---|"]
        for name, v in r["timings"].items():
            lines.append(f"| {name} | {_ms(v['median_s'])} | {_ms(v.get('published_s'))} | "
                         f"{_f(v.get('speedup_vs_published'))} |")
    if "predict" in st:
        lines += ["", "## Predict (mddpm-released, all boxes × slices batched)", "",
                  "| preset | volume | boxes | slices timed | precision | s/volume | volumes/s | TFLOP/s |",
                  "|---|---|---|---|---|---|---|---|"]
        for preset, r in st["predict"]["result"].items():
            for p, v in r["precisions"].items():
                lines.append(f"| {preset} | {'×'.join(map(str, r['volume']))} | {r['boxes']} | {r['slices_timed']} | "
                             f"{p} | {_f(v['seconds_per_volume'])} | {_f(v['volumes_per_s'])} | {v['tflops']:.4f} |")
        lines.append("\nWhen fewer slices than the volume's are timed, s/volume is scaled by slices/timed slices.")
    if "postprocess" in st:
        r = st["postprocess"]["result"]
        lines += ["", f"## Post-processing and metrics per volume ({'×'.join(map(str, r['volume']))}, "
                  f"brain {100 * r['brain_fraction']:.0f} %)", "",
                  "| stage | ours | reference implementation (same run) | speed-up | published code |",
                  "|---|---|---|---|---|"]
        for name, v in r["stages"].items():
            lines.append(f"| {name} | {_ms(v['ours_s'])} | {_ms(v['reference_s'])} | {_f(v['speedup_vs_reference'])}× "
                         "| "
                         f"{_ms(v['published_s'])} |")
        lines.append(f"| total | {_ms(r['total_ours_s'])} | {_ms(r['total_reference_s'])} | "
                     f"{_f(r['total_reference_s'] / r['total_ours_s'])}× | |")
        c = r["check"]
        lines.append(f"\nReferences: erosion = scipy binary_erosion per slice; median = scipy median_filter; "
                     f"CC = skimage label + regionprops filled_area (published); AP/AUROC = sklearn. "
                     f"Checks: median identical to scipy: {c['median_equal_scipy']}; AP {c['ap']:.6f} "
                     f"(sklearn {c['ap_sklearn']:.6f}); AUROC {c['auroc']:.6f} (sklearn {c['auroc_sklearn']:.6f}).")
    if "threshold" in st:
        r = st["threshold"]["result"]
        lines += ["", f"## Threshold search ({r['volumes']} pooled volumes, {r['voxels'] / 1e6:.1f} M voxels, "
                  f"{r['voxels_above_minimum'] / 1e6:.1f} M above the minimum)", "",
                  "| step | time |", "|---|---|",
                  f"| pool every volume's voxels above its minimum (unsorted) | {_ms(r['pooling_s'])} |",
                  f"| bisection (10 steps, 20 counting passes) on the pool | {_ms(r['bisection_s'])} |",
                  f"| **bisection total** | {_ms(r['bisection_total_s'])} |",
                  f"| rank every volume + merge (for the exact rule) | {_ms(r['ranking_s'])} |",
                  f"| exact search on the ranking | {_ms(r['exact_s'])} |",
                  f"| **exact total** | {_ms(r['exact_total_s'])} |",
                  "| reference: NumPy pass over all voxels per candidate (same run) | "
                  f"{_ms(r['reference_bisection_s'])} |",
                  f"| published code | {_ms(r['published_bisection_s'])} |",
                  "", f"Speed-up of the bisection: {_f(r['speedup_vs_reference'])}× vs the same-run reference, "
                  f"{_f(r['speedup_vs_published'])}× vs the published code; same threshold as the reference: "
                  f"{r['same_threshold_as_reference']}."]
    if "bf16_parity" in st:
        r = st["bf16_parity"]["result"]
        lines += ["", "## bf16 vs fp32 anomaly maps", "", f"Source: {r['source']}. Differences inside the brain; "
                  "AUPRC of all the set's voxels ranked together.", "",
                  "| set | volumes | max abs diff | mean abs diff | AUPRC fp32 | AUPRC bf16 | change |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {v['volumes']} | {v['max_abs_diff']:.2e} | {v['mean_abs_diff']:.2e} | "
                  f"{v['auprc_fp32']:.4f} | "
                  f"{v['auprc_bf16']:.4f} | {v['auprc_change']:+.2e} |" for name, v in r["sets"].items()]
    lines += ["", "Stage wall times: " + ", ".join(f"{k} {v['wall_s']:.0f} s (load {v['load_average_1min']:.1f})"
                                               for k, v in st.items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
