"""Side-by-side settings of one method on the synthetic demo data: train -> predict -> evaluate.

Each *setting* is a name and a list of ``--set`` overrides on top of a method's preset; every setting
is trained, its maps predicted on the lesion validation and test splits, and evaluated under both
post-processing rules (``published`` voxel constants and ``physical`` sizes in mm). One JSON line
per (setting, rule) goes to ``--out`` (appended, so a stopped run resumes: finished settings are
skipped; ``--resume`` continues a stopped training from its last checkpoint), and ``--table`` writes
the Markdown table of every line in the file.

    .venv/bin/python benchmarks/calibration.py --data DATA --work WORK --out results.jsonl \\
        --method mddpm-fpmcm --setting today= --setting "lr=train.lr=1e-3;train.precision=bf16" ...
    .venv/bin/python benchmarks/calibration.py --out results.jsonl --table table.md \
        --plot curve.png --curve budget

With ``--plot``, every line whose setting name starts with ``--curve`` is drawn as Dice and AUPRC
(tumour, MS) against training steps, one curve per method and post-processing rule.

A setting is ``NAME=KEY=VALUE;KEY=VALUE`` (``NAME=`` for the preset unchanged). Seconds are wall
times of this process's train and predict stages on whatever machine runs it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mddpm.evaluation.evaluate import evaluate
from mddpm.inference.predict import predict
from mddpm.training.train import train

TEST_SETS = {"tumour": ("tumour_val", "tumour_test"), "ms": ("ms_val", "ms_test")}
RULES = ("published", "physical")


def parse_setting(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition("=")
    return name, [item for item in rest.split(";") if item]


def run_setting(data: Path, work: Path, method: str, preset: str, name: str, overrides: list[str],
                precision: str, resume: bool = False) -> list[dict]:
    """Train, predict and evaluate one setting; one result dict per post-processing rule. ``resume``:
    continue a stopped training from its ``last.ckpt`` (``seconds_train`` then counts the rest only)."""
    folder = work / f"{method}-{name}"
    resumed = resume and (folder / "run" / "checkpoints" / "last.ckpt").is_file()
    t0 = time.perf_counter()
    run = train(data, method, preset, folder / "run", overrides=overrides, force=not resumed, resume=resumed,
                progress=False)
    seconds_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    for split in sorted({s for pair in TEST_SETS.values() for s in pair}):
        predict(run, data, split, folder / "maps" / split, precision=precision, force=True, progress=False)
    seconds_predict = time.perf_counter() - t0
    config = json.loads((run / "config.json").read_text())
    results = []
    for rule in RULES:
        row = {"method": method, "preset": preset, "setting": name, "overrides": overrides, "postprocess": rule,
               "steps": config["train"]["max_steps"], "seed": config["train"]["seed"],
               "seconds_train": round(seconds_train, 1), "seconds_predict": round(seconds_predict, 1),
               "resumed": resumed}
        for test_set, (val, test) in TEST_SETS.items():
            report = evaluate(folder / "maps" / test, folder / "maps" / val, folder / "eval" / rule / test_set,
                              rules=["exact"], force=True, log=lambda m: None, postprocess=rule)
            agg = report["aggregate"]
            row[f"{test_set}_dice"] = agg["rules"]["bisection"]["dice"]["mean"]
            row[f"{test_set}_dice_exact"] = agg["rules"]["exact"]["dice"]["mean"]
            row[f"{test_set}_auprc"] = agg["auprc"]["mean"]
        results.append(row)
    return results


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def table(lines: list[dict]) -> str:
    out = ["| method | setting | steps | seed | post-processing | tumour Dice | tumour AUPRC | MS Dice | MS AUPRC "
           "| train s | predict s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in lines:
        out.append(f"| {r['method']} | {r['setting']} | {r['steps']} | {r['seed']} | {r['postprocess']} "
                   f"| {100 * r['tumour_dice']:.1f} | {100 * r['tumour_auprc']:.1f} | {100 * r['ms_dice']:.1f} "
                   f"| {100 * r['ms_auprc']:.1f} | {_seconds(r['seconds_train'])} | {_seconds(r['seconds_predict'])} |")
    return "\n".join(out) + "\n"


def plot(lines: list[dict], prefix: str, path: Path) -> None:
    """Dice and AUPRC against steps for the settings named ``prefix*``, one curve per (method, rule)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[tuple[str, str], list[dict]] = {}
    for r in lines:
        if r["setting"].startswith(prefix):
            curves.setdefault((r["method"], r["postprocess"]), []).append(r)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4), constrained_layout=True)
    for ax, key in zip(axes, ("tumour_dice", "tumour_auprc", "ms_dice", "ms_auprc")):
        for i, ((method, rule), rows) in enumerate(sorted(curves.items())):
            rows = sorted(rows, key=lambda r: r["steps"])
            style = {"color": f"C{i // 2}", "linestyle": "-" if rule == "physical" else ":",
                     "label": f"{method} ({rule})"}
            if rows[-1]["steps"] == 0:  # nothing trained: a level line
                ax.axhline(100 * rows[-1][key], **style)
            else:
                ax.plot([r["steps"] for r in rows], [100 * r[key] for r in rows], marker="o", **style)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training steps (batch 16)")
        ax.set_title(key.replace("_", " ") + " (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="synthetic dataset folder (mddpm synth DATA --size demo)")
    p.add_argument("--work", type=Path, help="folder for runs, maps and evaluations")
    p.add_argument("--out", type=Path, required=True, help="JSON-lines results file (appended)")
    p.add_argument("--method", default="mddpm-fpmcm")
    p.add_argument("--preset", default="demo")
    p.add_argument("--precision", default="32", choices=["32", "bf16"], help="predict precision")
    p.add_argument("--setting", action="append", default=[], metavar="NAME=OVERRIDES")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped setting's training from its last.ckpt instead of starting again")
    p.add_argument("--table", type=Path, help="write the Markdown table of --out here")
    p.add_argument("--plot", type=Path, help="write the budget-curve PNG of --out here")
    p.add_argument("--curve", default="budget", help="setting-name prefix of the curve's lines (default: budget)")
    args = p.parse_args()
    done = set()
    if args.out.is_file():
        done = {(r["method"], r["setting"]) for r in map(json.loads, args.out.read_text().splitlines())}
    for text in args.setting:
        name, overrides = parse_setting(text)
        if (args.method, name) in done:
            continue
        rows = run_setting(args.data, args.work, args.method, args.preset, name, overrides, args.precision,
                           args.resume)
        with args.out.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        print(table(rows), flush=True)
    lines = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.is_file() else []
    if args.table:
        args.table.write_text(table(lines))
    if args.plot:
        plot(lines, args.curve, args.plot)


if __name__ == "__main__":
    main()
