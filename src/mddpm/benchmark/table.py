"""Table 1 as data: the finished evaluations of an experiment -> one JSON-able table dict (cells of
mean ± std across runs, p-values against the reference, wall times). Rendering is :mod:`mddpm.report`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mddpm._version import __version__
from mddpm.benchmark.experiment import Experiment
from mddpm.benchmark.plan import RunPaths, now_iso, read_records
from mddpm.benchmark.statistics import MIN_PAIRS, NO_P, across_runs, paired_wilcoxon
from mddpm.errors import MddpmError
from mddpm.evaluation.metrics_files import ORACLE_NOTE
from mddpm.io import read_json


@dataclass
class Evaluation:
    """One evaluated run on one test set: its ``metrics.json`` content (and folder, if on disk)."""

    dataset: str
    test_set: str
    method: str
    run: str
    metrics: dict
    path: Path | None = None


def _run_value(metrics: dict, metric: str, rule: str) -> float | None:
    agg = metrics["aggregate"]
    stat = agg["rules"][rule]["dice"] if metric == "dice" else agg.get(metric)
    return None if stat is None else stat.get("mean")


def build_table(evaluations: list[Evaluation], methods: list[str], reference: str | None = None,
                labels: dict[str, str] | None = None, extra_rows: list[str] | tuple = (),
                published: dict | None = None, run_order: list[str] | None = None) -> dict:
    """Table 1 from evaluations (see the module docstring for the statistics).

    Columns are the (dataset, test set) pairs in order of appearance, rows the ``methods``. Each cell
    holds ``dice`` (default threshold rule), ``auprc``, ``auroc``, ``oracle_dice`` (ORACLE: best Dice
    on the volume's own labels) and ``dice_by_rule`` as :func:`across_runs` dicts, plus ``p_dice`` and
    ``p_auprc`` (:func:`paired_wilcoxon` against ``reference``; None on the reference row).
    """
    labels = labels or {}
    columns: list[tuple[str, str]] = list(dict.fromkeys((e.dataset, e.test_set) for e in evaluations))
    runs_in_order = run_order or list(dict.fromkeys(e.run for e in evaluations))
    default_rules = {e.metrics.get("default_rule", "bisection") for e in evaluations}
    if len(default_rules) > 1:
        raise MddpmError(f"evaluations use different default threshold rules {sorted(default_rules)}")
    rule = default_rules.pop() if default_rules else "bisection"

    by_cell: dict[tuple[str, str, str], dict[str, dict]] = {}
    for e in evaluations:
        by_cell.setdefault((e.dataset, e.test_set, e.method), {})[e.run] = e.metrics

    rows = []
    for m in methods:
        cells = {}
        for dataset, test_set in columns:
            runs = by_cell.get((dataset, test_set, m))
            if not runs:
                continue
            ordered = {r: runs[r] for r in runs_in_order if r in runs}
            first = next(iter(ordered.values()))
            rules = [r for r in first["thresholds"] if all(r in x["thresholds"] for x in ordered.values())]
            cell = {
                "runs": list(ordered),
                "volumes": [x["test"]["cases"] for x in ordered.values()],
                "dice": across_runs([_run_value(x, "dice", rule) for x in ordered.values()]),
                "auprc": across_runs([_run_value(x, "auprc", rule) for x in ordered.values()]),
                "auroc": across_runs([_run_value(x, "auroc", rule) for x in ordered.values()]),
                "oracle_dice": across_runs([_run_value(x, "oracle_dice_bisection", rule) for x in ordered.values()]),
                "dice_by_rule": {r: across_runs([_run_value(x, "dice", r) for x in ordered.values()]) for r in rules},
                "thresholds": {r: [x["thresholds"][r]["threshold"] for x in ordered.values()] for r in rules},
                "p_dice": None, "p_auprc": None,
            }
            ref_runs = by_cell.get((dataset, test_set, reference)) if reference else None
            if ref_runs and m != reference:
                cell["p_dice"] = paired_wilcoxon(ordered, ref_runs, "dice", rule)
                cell["p_auprc"] = paired_wilcoxon(ordered, ref_runs, "auprc", rule)
            cells[f"{dataset}/{test_set}"] = cell
        rows.append({"method": m, "label": labels.get(m, m), "extra": m in extra_rows, "reference": m == reference,
                     "cells": cells})

    return {
        "format": "mddpm-table", "format_version": 1, "created": now_iso(), "mddpm_version": __version__,
        "rule": rule, "reference": reference,
        "reference_label": labels.get(reference, reference) if reference else None,
        "columns": [{"key": f"{d}/{t}", "dataset": d, "test_set": t} for d, t in columns],
        "rows": rows,
        "statistics": {
            "cell": "mean ± std across runs of each run's per-volume mean on the test split",
            "std": "population (ddof 0); std_sample: ddof 1",
            "dice": f"per-volume Dice at the threshold chosen on the validation split (rule {rule!r})",
            "auprc": "per-volume average precision over all voxels of the post-processed map",
            "oracle_dice": ORACLE_NOTE,
            "p": "paired Wilcoxon signed-rank (scipy.stats.wilcoxon, two-sided, zero_method 'wilcox') of per-volume "
                 "scores against the reference; pairs by (run, case), pooled over runs (not independent: optimistic); "
                 + NO_P,
            "min_pairs": MIN_PAIRS,
        },
        "published": published,
        "evaluations": [{"dataset": e.dataset, "test_set": e.test_set, "method": e.method, "run": e.run,
                         "path": str(e.path) if e.path else None} for e in evaluations],
    }


def collect_evaluations(experiment: Experiment, out: Path) -> list[Evaluation]:
    """Every finished evaluation of the experiment under ``out`` (methods and runs in experiment order)."""
    found = []
    for d in experiment.datasets:
        for t in d.test_sets:
            for m in experiment.methods:
                for r in experiment.runs_of(m):
                    folder = RunPaths.of(out, d.name, m, r.tag).eval(t)
                    if (folder / "metrics.json").is_file():
                        found.append(Evaluation(d.name, t.name, m, r.tag, read_json(folder / "metrics.json"), folder))
    _check_one_dataset_each(found)
    return found


def _check_one_dataset_each(evaluations: list[Evaluation]) -> None:
    """Refuse a table whose column would mix evaluations made on different dataset folders: the
    per-volume pairs of the p-values match cases by id, so every method must see the same scans."""
    first: dict[str, Evaluation] = {}
    for e in evaluations:
        path = e.metrics.get("test", {}).get("dataset")
        if path is None:
            continue
        ref = first.setdefault(e.dataset, e)
        if ref.metrics["test"]["dataset"] != path:
            raise MddpmError(f"{e.path / 'metrics.json'}: evaluated on {path}, but {ref.path / 'metrics.json'} on "
                             f"{ref.metrics['test']['dataset']}; a table compares methods on one dataset (re-run one "
                             f"of them on the other's data, or use another --out)")


def stage_seconds(experiment: Experiment, out: Path) -> dict:
    """Recorded time per method, summed over runs and datasets: {method: {"runs": trained runs,
    "wall": {"train", "predict", "evaluate": seconds}, "cpu": {...: CPU seconds, None if not recorded}}}."""
    stages = ("train", "predict", "evaluate")
    totals = {}
    for m in experiment.methods:
        entry = {"runs": 0, "wall": dict.fromkeys(stages, 0.0), "cpu": dict.fromkeys(stages, 0.0)}
        for d in experiment.datasets:
            for r in experiment.runs_of(m):
                records = {name: rec for name, rec in read_records(RunPaths.of(out, d.name, m, r.tag)).items()
                           if "finished" in rec}
                entry["runs"] += "train" in records
                for name, rec in records.items():
                    kind = name.split("/")[0]
                    entry["wall"][kind] += rec.get("seconds") or 0.0
                    cpu = rec.get("cpu_seconds")
                    entry["cpu"][kind] = None if cpu is None or entry["cpu"][kind] is None else entry["cpu"][kind] + cpu
        if entry["runs"]:
            totals[m] = entry
    return totals


def build_benchmark_table(experiment: Experiment, out: Path) -> dict:
    """:func:`build_table` over the finished evaluations of ``experiment`` in ``out``, with labels, the
    experiment and wall times."""
    table = build_table(collect_evaluations(experiment, out), experiment.methods, experiment.reference,
                        experiment.labels, experiment.extra_rows, experiment.published,
                        list(dict.fromkeys(r.tag for m in experiment.methods for r in experiment.runs_of(m))))
    table["experiment"] = {"name": experiment.name, "description": experiment.description, "preset": experiment.preset,
                           "runs": experiment.to_json()["runs"], "source": experiment.source}
    table["seconds"] = stage_seconds(experiment, out)
    return table


