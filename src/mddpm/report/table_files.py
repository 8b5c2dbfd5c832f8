"""Table 1 as files: ``table.md`` (Table 1, p-values, every metric, published values, time),
``table.csv`` (long format) and ``table.json`` (the table dict of :mod:`mddpm.benchmark.table`)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mddpm.evaluation.metrics_files import ORACLE_LABEL
from mddpm.io import atomic_write, write_json
from mddpm.report.formatting import (
    csv_number,
    format_p,
    format_seconds,
    percent,
    published_values,
    row_name,
    table1_notes,
)


def table_markdown(table: dict) -> str:
    """Table 1 and the detail tables as Markdown."""
    cols, rows = table["columns"], table["rows"]
    notes = table1_notes(table)
    experiment = table.get("experiment", {})
    title = f"Benchmark `{experiment['name']}`" if experiment else "Benchmark"
    lines = [f"# {title}: Table 1", ""]
    if experiment.get("description"):
        lines += [experiment["description"], ""]
    lines += [notes["cells"], ""]
    main = [r for r in rows if not r["extra"]]
    extra = [r for r in rows if r["extra"]]

    def header(metrics: list[str]) -> list[str]:
        names = [f"{c['test_set']} {m}" for c in cols for m in metrics]
        return ["| Model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    lines += header(["DICE", "AUPRC"])
    for r in main + extra:
        cells = [(r["cells"].get(c["key"]) or {}) for c in cols]
        values = [v for cell in cells for v in (percent(cell.get("dice")), percent(cell.get("auprc")))]
        name = row_name(r) + (" ‡" if r["extra"] else "")
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    if extra:
        lines += ["", "‡ not a row of the paper's Table 1."]

    if table.get("reference"):
        lines += ["", f"## p-values against {table['reference_label']}", "", notes["p"], ""]
        names = [f"{c['test_set']} {m}" for c in cols for m in ("DICE p (Δ)", "AUPRC p (Δ)")]
        lines += ["| Model | " + " | ".join(names) + " | pairs |", "|---|" + "---|" * (len(names) + 1)]
        for r in main + extra:
            if r["reference"]:
                continue
            values, pairs = [], []
            for c in cols:
                cell = r["cells"].get(c["key"]) or {}
                for key in ("p_dice", "p_auprc"):
                    test = cell.get(key)
                    delta = test.get("mean_difference") if test else None
                    values.append(format_p(test) + ("" if delta is None else f" ({100 * delta:+.2f})"))
                pairs.append(str((cell.get("p_dice") or {}).get("n_pairs", "–")))
            lines.append(f"| {row_name(r)} | " + " | ".join(values) + f" | {'/'.join(pairs)} |")

    rules = list(dict.fromkeys(rule for r in rows for c in r["cells"].values() for rule in c["dice_by_rule"]))
    lines += ["", "## Every metric", "", f"Mean ± std across runs, in %. {notes['rules']} {notes['oracle']}", ""]
    for c in cols:
        names = ["AUROC", ORACLE_LABEL] + [f"DICE ({rule})" for rule in rules]
        lines += [f"### {c['dataset']} / {c['test_set']}", "", "| Model | runs | volumes | " + " | ".join(names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        for r in rows:
            cell = r["cells"].get(c["key"])
            if not cell:
                lines.append(f"| {row_name(r)} | 0 | – | " + " | ".join("–" for _ in names) + " |")
                continue
            values = [percent(cell["auroc"]), percent(cell["oracle_dice"])]
            values += [percent(cell["dice_by_rule"].get(rule)) for rule in rules]
            lines.append(f"| {row_name(r)} | {len(cell['runs'])} | {cell['volumes'][0]} | " + " | ".join(values) + " |")
        lines.append("")

    published = published_values(table)
    if published:
        names, pub_rows = published
        lines += ["## Published values", "", table["published"].get("source", ""), ""]
        lines += ["| Model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for label, cells in pub_rows:
            texts = ["–" if not v else f"{v[0]:.2f} ± {v[1]:.2f}" for v in cells]
            lines.append(f"| {label} | " + " | ".join(texts) + " |")
        lines.append("")

    seconds = table.get("seconds")
    if seconds:
        lines += ["## Time", "", notes["time"], "",
                  "| Model | runs | train | predict | evaluate |", "|---|---|---|---|---|"]
        for r in rows:
            s = seconds.get(r["method"])
            if s:
                lines.append(f"| {r['label']} | {s['runs']} | " + " | ".join(
                    format_seconds(s["wall"][k], s["cpu"][k]) for k in ("train", "predict", "evaluate")) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def table_csv(table: dict) -> str:
    """Long-format CSV: one row per (dataset, test set, method, metric)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["dataset", "test_set", "method", "label", "extra_row", "reference", "metric", "mean", "std",
                     "std_sample", "n_runs", "per_run", "p_value", "n_pairs", "mean_difference"])
    cols = {c["key"]: c for c in table["columns"]}
    for r in table["rows"]:
        for key, cell in r["cells"].items():
            metrics = [("dice", cell["dice"], cell["p_dice"]), ("auprc", cell["auprc"], cell["p_auprc"]),
                       ("auroc", cell["auroc"], None), ("oracle_dice", cell["oracle_dice"], None)]
            metrics += [(f"dice[{rule}]", stat, None) for rule, stat in cell["dice_by_rule"].items()]
            for name, stat, test in metrics:
                writer.writerow([cols[key]["dataset"], cols[key]["test_set"], r["method"], r["label"], r["extra"],
                                 r["reference"], name, csv_number(stat["mean"]), csv_number(stat["std"]),
                                 csv_number(stat["std_sample"]), stat["n_runs"],
                                 ";".join(csv_number(v) for v in stat["runs"]),
                                 csv_number(test["p"]) if test else "", test["n_pairs"] if test else "",
                                 csv_number(test["mean_difference"]) if test else ""])
    return buf.getvalue()


def write_table_files(table: dict, out: Path) -> None:
    """``table.json``, ``table.md`` and ``table.csv`` in ``out`` (each atomically)."""
    write_json(out / "table.json", table)
    with atomic_write(out / "table.md") as tmp:
        tmp.write_text(table_markdown(table))
    with atomic_write(out / "table.csv") as tmp:
        tmp.write_text(table_csv(table))
