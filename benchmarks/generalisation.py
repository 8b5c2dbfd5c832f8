"""Generalisation: in-family against out-of-family results of the ``generalisation`` experiment, and the
levers against the gap, side by side (``benchmarks/results/generalisation.md`` and ``.png``).

Three steps, each through the public API or the command line:

1. the rows: ``mddpm benchmark generalisation --out BASE`` (training variants, e.g. augmentation or a
   larger training set, are the same experiment with other overrides or data: see
   ``benchmarks/experiments/``, run with ``--data template=BASE/data/template ...``);
2. scoring variants of trained runs (no retraining), e.g. the Mahalanobis score (or ``--score signed``,
   the positive part of ``x − x̂``, which sees only bright lesions)::

       python benchmarks/generalisation.py score --base BASE --method mddpm-fpmcm \\
           --score mahalanobis --samples 8 --out BASE-mahalanobis

   which predicts every split the experiment scores with that option and evaluates every test set,
   in the benchmark's own folder layout;
3. the table: ``python benchmarks/generalisation.py table --variant base=BASE --variant NAME=DIR ...``.

"In-family" is a test set of the family the row was trained on; "out-of-family" is the same lesion
kind made by the other family (the same subjects the other family's rows see in-family).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import mddpm
from machine import machine_info
from mddpm.benchmark.experiment import load_experiment

KINDS = ("tumour", "infarct", "haemorrhage", "rings", "diffuse")
UNSEEN = KINDS[1:]
EXPERIMENT = "generalisation"


def score_variant(base: Path, method: str, out: Path, score: str, samples: int, kinds=KINDS) -> None:
    """Predict (with ``score``) and evaluate every test set of the experiment for ``method``'s runs in
    ``base``; writes ``out/runs/<dataset>/<method>/<run>/{maps,eval}`` like the benchmark."""
    experiment = load_experiment(EXPERIMENT)
    for d in experiment.datasets:
        data = base / "data" / d.name
        for r in experiment.runs:
            run_dir = base / "runs" / d.name / method / r.tag
            cell = out / "runs" / d.name / method / r.tag
            for t in d.test_sets:
                if t.name.split("-")[-1] not in kinds:
                    continue
                for split in (t.val, t.test):
                    maps = cell / "maps" / split
                    if not (maps / "predict.json").is_file():
                        mddpm.predict(run_dir / "train", data, split, maps, score=score, samples=samples,
                                      force=True, progress=False)
                if not (cell / "eval" / t.name / "metrics.json").is_file():
                    mddpm.evaluate(cell / "maps" / t.test, cell / "maps" / t.val, cell / "eval" / t.name,
                                   threshold=["bisection"], force=True, progress=False)


def _metrics(cell: Path, test_set: str) -> tuple[float, float] | None:
    path = cell / "eval" / test_set / "metrics.json"
    if not path.is_file():
        return None
    agg = json.loads(path.read_text())["aggregate"]
    return 100 * agg["rules"]["bisection"]["dice"]["mean"], 100 * agg["auprc"]["mean"]


def _seconds(cell: Path) -> tuple[float | None, float | None]:
    """(training seconds, predict seconds per volume) of a run cell, where recorded."""
    stages = cell / "stages.json"
    train = json.loads(stages.read_text()).get("train", {}).get("seconds") if stages.is_file() else None
    per_volume = [json.loads(p.read_text())["settings"].get("seconds_per_volume")
                  for p in (cell / "maps").glob("*/predict.json")]
    per_volume = [s for s in per_volume if s]
    return train, (float(np.median(per_volume)) if per_volume else None)


def collect(variants: dict[str, Path]) -> list[dict]:
    """One row per variant × method × training family with in- and out-of-family results per kind."""
    experiment = load_experiment(EXPERIMENT)
    rows = []
    for variant, folder in variants.items():
        for d in experiment.datasets:
            other = next(o.name for o in experiment.datasets if o.name != d.name)
            for method in experiment.methods:
                cell = folder / "runs" / d.name / method / experiment.runs[0].tag
                if not cell.is_dir():
                    continue
                row = {"variant": variant, "method": method, "label": experiment.label(method), "trained_on": d.name,
                       "tested_on": other}
                for kind in KINDS:
                    row[f"in:{kind}"] = _metrics(cell, kind)
                    row[f"out:{kind}"] = _metrics(cell, f"{other}-{kind}")
                row["train_s"], row["predict_s_per_volume"] = _seconds(cell)
                rows.append(row)
    return rows


def _fmt(pair, i: int) -> str:
    return "–" if pair is None else f"{pair[i]:.1f}"


def _unseen_mean(row: dict, side: str, i: int) -> float | None:
    values = [row[f"{side}:{k}"][i] for k in UNSEEN if row[f"{side}:{k}"] is not None]
    return float(np.mean(values)) if len(values) == len(UNSEEN) else None


def write_table(rows: list[dict], out: Path, command: str) -> None:
    lines = [f"<!-- written by: {command} -->", "",
             "| variant | row | trained on | tumour in-family Dice / AUPRC | tumour out-of-family Dice / AUPRC | "
             "unseen kinds in-family Dice / AUPRC | unseen kinds out-of-family Dice / AUPRC | train s | "
             "predict s/volume |", "|---" * 9 + "|"]
    for r in rows:
        unseen = [_unseen_mean(r, side, i) for side in ("in", "out") for i in (0, 1)]
        u = ["–" if v is None else f"{v:.1f}" for v in unseen]
        train = "–" if r["train_s"] is None else f"{r['train_s']:.0f}"
        per_volume = "–" if r["predict_s_per_volume"] is None else f"{r['predict_s_per_volume']:.2f}"
        lines.append(f"| {r['variant']} | {r['label']} | {r['trained_on']} | {_fmt(r['in:tumour'], 0)} / "
                     f"{_fmt(r['in:tumour'], 1)} | {_fmt(r['out:tumour'], 0)} / {_fmt(r['out:tumour'], 1)} | "
                     f"{u[0]} / {u[1]} | {u[2]} / {u[3]} | {train} | {per_volume} |")
    lines += ["", "Per lesion kind (Dice / AUPRC %), in-family → out-of-family:", "",
              "| variant | row | trained on | " + " | ".join(KINDS) + " |", "|---" * (3 + len(KINDS)) + "|"]
    for r in rows:
        cells = [f"{_fmt(r[f'in:{k}'], 0)} / {_fmt(r[f'in:{k}'], 1)} → {_fmt(r[f'out:{k}'], 0)} / "
                 f"{_fmt(r[f'out:{k}'], 1)}" for k in KINDS]
        lines.append(f"| {r['variant']} | {r['label']} | {r['trained_on']} | " + " | ".join(cells) + " |")
    lines += ["", "The same results per test family: a model trained on that family against one trained on the other "
              "(Dice / AUPRC %, tumour; then the mean over the four unseen kinds). The difference is the cost of "
              "never having seen that family's anatomy and contrast, with the test set held fixed:", "",
              "| variant | row | tested on | tumour: trained on it | tumour: trained on the other | "
              "unseen: trained on it | unseen: trained on the other |", "|---" * 7 + "|"]
    by_key = {(r["variant"], r["method"], r["trained_on"]): r for r in rows}
    for r in rows:
        other = by_key.get((r["variant"], r["method"], r["tested_on"]))
        if other is None:
            continue
        own_u = [_unseen_mean(r, "in", i) for i in (0, 1)]
        cross_u = [_unseen_mean(other, "out", i) for i in (0, 1)]
        u = ["–" if v is None else f"{v:.1f}" for v in own_u + cross_u]
        lines.append(f"| {r['variant']} | {r['label']} | {r['trained_on']} | {_fmt(r['in:tumour'], 0)} / "
                     f"{_fmt(r['in:tumour'], 1)} | {_fmt(other['out:tumour'], 0)} / {_fmt(other['out:tumour'], 1)} | "
                     f"{u[0]} / {u[1]} | {u[2]} / {u[3]} |")
    out.with_suffix(".table.md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"command": command, "machine": machine_info(), "rows": rows},
                                                   indent=1))


def plot(rows: list[dict], out: Path) -> None:
    """Per test family, each row's tumour Dice when trained on the template and on the varied family
    (bars) and the mean over the unseen kinds (black ticks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {(r["variant"], r["method"], r["trained_on"]): r for r in rows}
    cells = list(dict.fromkeys((r["variant"], r["method"], r["label"]) for r in rows))
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.75 * len(cells) + 2), 7.5), sharey=True)
    for ax, tested in zip(axes, ("template", "varied")):
        x = np.arange(len(cells))
        for offset, trained, colour in ((-0.2, "template", "tab:blue"), (0.2, "varied", "tab:orange")):
            side = "in" if trained == tested else "out"
            picked = [by_key.get((v, m, trained)) for v, m, _ in cells]
            ax.bar(x + offset, [r[f"{side}:tumour"][0] if r and r[f"{side}:tumour"] else np.nan for r in picked],
                   0.4, color=colour, label=f"trained on {trained}")
            unseen = [_unseen_mean(r, side, 0) if r else None for r in picked]
            ax.scatter(x + offset, [np.nan if u is None else u for u in unseen], color="k", marker="_", s=120,
                       zorder=3, label="mean of the 4 unseen kinds" if trained == "template" else None)
        short = [label.split(" +")[0].replace(" (no learning)", "").replace(" (FPM-CM)", "") for _, _, label in cells]
        ax.set_xticks(x, [f"{name}\n{v}" for name, (v, _, _) in zip(short, cells)], fontsize=7)
        ax.set_title(f"tested on the {tested} family (tumour Dice %; bisection threshold, published post-processing)",
                     fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(0, 75)
    axes[0].legend(fontsize=8, ncol=3, loc="upper right")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score", help="a scoring variant of trained runs")
    s.add_argument("--base", type=Path, required=True)
    s.add_argument("--method", required=True)
    s.add_argument("--score", required=True)
    s.add_argument("--samples", type=int, default=8)
    s.add_argument("--kinds", nargs="+", default=list(KINDS))
    s.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("table", help="the table and plot from benchmark folders")
    t.add_argument("--variant", action="append", required=True, metavar="NAME=DIR")
    t.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "generalisation")
    args = parser.parse_args()
    if args.cmd == "score":
        score_variant(args.base, args.method, args.out, args.score, args.samples, tuple(args.kinds))
        return
    variants = {name: Path(folder) for name, _, folder in (v.partition("=") for v in args.variant)}
    rows = collect(variants)
    command = "python benchmarks/generalisation.py table " + " ".join(f"--variant {v}" for v in args.variant)
    write_table(rows, args.out, command)
    plot(rows, args.out)
    print(args.out.with_suffix(".table.md").read_text())


if __name__ == "__main__":
    main()
