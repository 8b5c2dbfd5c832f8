"""The budget confound on the demo proxy: the paper's comparison (mDDPM at 6x the optimiser steps of DDPM and
pDDPM, as the released code trains them) against the one it should have made (equal steps), from a finished
``budget`` benchmark (``benchmarks/experiments/budget.json``), and the budget curve with the 6:1 pairs marked.

    .venv/bin/python benchmarks/budget_confound.py OUT --table budget_confound.md \\
        --plot benchmarks/results/budget_curve.png --curve benchmarks/results/budget_curve.jsonl

OUT is the benchmark's output folder. Every comparison is the paired Wilcoxon signed-rank test of the
benchmark's table (per-volume scores, pairs by run and case, pooled over the runs both rows have). With
``--curve``, the lines of the earlier single-seed budget curve (``budget_curve.jsonl``) are drawn beside
this benchmark's means.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mddpm.benchmark.experiment import load_experiment
from mddpm.benchmark.statistics import across_runs, paired_wilcoxon
from mddpm.benchmark.table import collect_evaluations
from mddpm.config import resolve_config

EXPERIMENT = Path(__file__).parent / "experiments" / "budget.json"
# (row, against, reading): the paper's reading trains mDDPM 6x longer; the fair one gives equal steps
COMPARISONS = [
    ("mddpm-fpmcm-9600", "ddpm", "released 6:1 (the paper's comparison)"),
    ("mddpm-fpmcm-9600", "pddpm", "released 6:1 (the paper's comparison)"),
    ("mddpm-fpmcm", "ddpm", "equal steps, 1,600"),
    ("mddpm-fpmcm", "pddpm", "equal steps, 1,600"),
    ("pddpm", "ddpm", "equal steps, 1,600"),
    ("mddpm-fpmcm-6400", "ddpm-6400", "equal steps, 6,400"),
    ("mddpm-fpmcm-6400", "pddpm-6400", "equal steps, 6,400"),
]


def cells(out: Path) -> tuple[dict, dict]:
    """``({(row, test set): {run tag: metrics}}, {row: steps})`` of the finished evaluations."""
    experiment = load_experiment(EXPERIMENT)
    found: dict = {}
    for e in collect_evaluations(experiment, out):
        found.setdefault((e.method, e.test_set), {})[e.run] = e.metrics
    steps = {row: resolve_config(experiment.method_of(row), experiment.preset, experiment.overrides_of(row))
             ["train"]["max_steps"] for row in experiment.methods}
    return found, steps


def summary(runs: dict, metric: str) -> dict:
    values = [(r["aggregate"]["rules"]["bisection"]["dice"] if metric == "dice" else r["aggregate"][metric])["mean"]
              for r in runs.values()]
    return across_runs(values)


def fmt(stat: dict) -> str:
    if stat["mean"] is None:
        return "–"
    spread = f" ± {100 * stat['std']:.1f}" if stat["n_runs"] > 1 else ""
    return f"{100 * stat['mean']:.1f}{spread} ({stat['n_runs']})"


def markdown(found: dict, steps: dict) -> str:
    rows = sorted({row for row, _ in found}, key=lambda r: (r.split("-")[0], steps[r]))
    out = ["| row | steps | tumour Dice | tumour AUPRC | MS Dice | MS AUPRC |", "|---|---|---|---|---|---|"]
    for row in rows:
        out.append(f"| {row} | {steps[row]:,} | " + " | ".join(
            fmt(summary(found[(row, t)], m)) if (row, t) in found else "–"
            for t in ("tumour", "ms") for m in ("dice", "auprc")) + " |")
    out += ["", "| reading | row | against | steps | tumour Dice Δ (p, pairs) | tumour AUPRC Δ (p) |",
            "|---|---|---|---|---|---|"]
    for row, other, reading in COMPARISONS:
        if (row, "tumour") not in found or (other, "tumour") not in found:
            continue
        a, b = found[(row, "tumour")], found[(other, "tumour")]
        dice, auprc = paired_wilcoxon(a, b, "dice", "bisection"), paired_wilcoxon(a, b, "auprc", "bisection")
        out.append(f"| {reading} | {row} | {other} | {steps[row]:,} : {steps[other]:,} | "
                   f"{_delta(dice)} | {_delta(auprc)} |")
    return "\n".join(out) + "\n"


def _delta(test: dict) -> str:
    if test["mean_difference"] is None:
        return "–"
    p = "–" if test["p"] is None else f"{test['p']:.2g}"
    return f"{100 * test['mean_difference']:+.1f} (p = {p}, {test['n_pairs']})"


def plot(found: dict, steps: dict, curve: Path | None, path: Path) -> None:
    """Tumour Dice against steps: this benchmark's means ± std (markers), the earlier curve (thin lines), and
    the released 6:1 pairs (mDDPM at 9,600 against DDPM and pDDPM at 1,600) joined by arrows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"ddpm": "C0", "pddpm": "C1", "mddpm-fpmcm": "C2", "vae": "C3", "dae": "C4"}
    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    if curve is not None:
        lines: dict = {}
        for line in map(json.loads, curve.read_text().splitlines()):
            if line["setting"].startswith("budget-") and line["postprocess"] == "published" and line["steps"]:
                lines.setdefault(line["method"], []).append((line["steps"], 100 * line["tumour_dice"]))
        for method, points in lines.items():
            points.sort()
            ax.plot(*zip(*points), color=colours.get(method, "grey"), alpha=0.35, lw=1, marker=".",
                    label=f"{method} (earlier curve, 1 seed, AMD EPYC)")
    for row in sorted({r for r, _ in found}):
        stat = summary(found[(row, "tumour")], "dice")
        method = row.rsplit("-", 1)[0] if row[-1].isdigit() else row
        seeds = f"{stat['n_runs']} seed{'s' * (stat['n_runs'] > 1)}"
        ax.errorbar(steps[row], 100 * stat["mean"], yerr=100 * (stat["std"] or 0), color=colours[method],
                    marker="o", ms=7, capsize=4, lw=2, label=f"{row} ({seeds}, this benchmark)")
    head = ("mddpm-fpmcm-9600", "tumour")
    if head in found:
        top = 100 * summary(found[head], "dice")["mean"]
        for other in ("ddpm", "pddpm"):
            if (other, "tumour") in found:
                low = 100 * summary(found[(other, "tumour")], "dice")["mean"]
                ax.annotate("", xy=(9600, top), xytext=(1600, low),
                            arrowprops={"arrowstyle": "->", "color": colours[other], "ls": "--", "lw": 1.2})
        ax.text(9000, top - 3, "released 6:1 pairs (dashed):\nmDDPM at 9,600 steps against\nDDPM and pDDPM at 1,600",
                ha="right", va="top", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks([400, 1600, 6400, 9600], ["400", "1,600", "6,400", "9,600"])
    ax.set_xlabel("optimiser steps (batch 16)")
    ax.set_ylabel("tumour Dice (%), bisection threshold")
    ax.set_title("The budget confound on the demo proxy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="output folder of `mddpm benchmark benchmarks/experiments/budget.json`")
    p.add_argument("--table", type=Path, help="write the Markdown tables here (default: print them)")
    p.add_argument("--plot", type=Path, help="write the budget-curve PNG here")
    p.add_argument("--curve", type=Path, help="the earlier curve's JSON lines (benchmarks/results/budget_curve.jsonl)")
    args = p.parse_args()
    found, steps = cells(args.out)
    text = markdown(found, steps)
    if args.table:
        args.table.write_text(text)
    else:
        print(text, end="")
    if args.plot:
        plot(found, steps, args.curve, args.plot)


if __name__ == "__main__":
    main()
