"""One self-contained HTML report of evaluations (``mddpm demo``, ``mddpm benchmark``).

:func:`write_report` reads evaluation folders (``metrics.json``, ``pr.json``, ``examples/`` and
``figures/`` written by ``mddpm evaluate``) and, where they still exist, the prepared caches and run logs
that ``metrics.json`` names, and renders ``templates/report.html.j2`` (jinja2). The HTML has inline CSS and
base64 PNG images only: no script, no external fetch. It shows

- a summary table: per method × test set DICE for every threshold rule side by side (the default
  rule first), AUPRC, AUROC and the ORACLE bisection Dice (labelled: it looks at the test labels). Given a
  benchmark ``table`` (:func:`mddpm.benchmark.table.build_table`) the values are mean ± std across
  runs, with p-values; otherwise mean ± std over the volumes of each evaluation;
- precision-recall curves pooled over all voxels of the post-processed test maps, as evaluate stored
  them (:func:`mddpm.evaluation.pr_curve.pooled_pr_curve`); an evaluation without ``pr.json``, no curve;
- per test set, one line on its lesion sizes against the post-processing's
  (:mod:`mddpm.evaluation.lesion_scale`; needs the prepared cache);
- per method, the training curve of every run and example cases (best, median and worst Dice at the
  default rule) as evaluate drew them, else the evaluation's own figures;
- per run, the configuration as collapsible JSON; the protocol settings at the end.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import os
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from mddpm._version import __version__
from mddpm.errors import MddpmError
from mddpm.evaluation.examples import EXAMPLES
from mddpm.evaluation.lesion_scale import lesion_scale
from mddpm.evaluation.metrics_files import ORACLE_NOTE
from mddpm.io import atomic_write
from mddpm.report import figures
from mddpm.report.evaluations import (
    ReportEvaluation,
    load_evaluations,
    method_description,
    run_config,
    training_summary,
)
from mddpm.report.formatting import format_p, format_seconds, percent_parts, published_values, rule_name, table1_notes
from mddpm.viz.pr_curves import pr_figure

TEMPLATES = Path(__file__).parent / "templates"


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True,
                      undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters.update(percent_parts=percent_parts, format_p=format_p, format_seconds=format_seconds,
                       rule_name=rule_name, pretty_json=lambda obj: json.dumps(obj, indent=2, default=str),
                       png_uri=lambda png: "data:image/png;base64," + base64.b64encode(png).decode("ascii"))
    env.globals.update(oracle_note=ORACLE_NOTE)
    return env


def _anchor(text: str) -> str:
    return "m-" + "".join(ch if ch.isalnum() else "-" for ch in text)


def _method_section(m: str, label: str, evs: list[ReportEvaluation], columns: list[str],
                    first: dict, curves: dict, n_methods: int, examples: int) -> dict:
    """What the report shows for one method (see ``report.html.j2``)."""
    method_curves = [(column.split("/", 1)[1], curves.get((m, column))) for column in columns if (m, column) in first]
    method_curves = [(n, c) for n, c in method_curves if c and c["recall"]]
    test_sets = []
    for column in columns:
        ev = first.get((m, column))
        if ev is not None:
            test_sets.append({"name": column.split("/", 1)[1], "run_label": ev.run_label, "rule": ev.default_rule,
                              "pictures": figures.examples(ev, examples)})
    runs: dict[str, list[ReportEvaluation]] = {}
    for ev in evs:
        runs.setdefault(ev.run, []).append(ev)
    return {
        "method": m, "label": label, "anchor": _anchor(m), "description": method_description(m),
        "trained": training_summary(evs[0].metrics.get("config") or {}),
        "training_curve": figures.training_curves(evs, label), "test_sets": test_sets,
        "pr_figure": pr_figure(method_curves, label) if len(method_curves) > 1 and n_methods > 1 else None,
        "configs": [(f"Configuration of {run_evs[0].run_label} ({', '.join(e.test_set for e in run_evs)})",
                     [run_config(e) for e in run_evs]) for run_evs in runs.values()],
    }


def write_report(out_html: str | os.PathLike, evaluations: list, title: str, table: dict | None = None, *,
                 examples: int = EXAMPLES,
                 labels: dict[str, str] | None = None) -> Path:
    """Write the HTML report of ``evaluations`` (folders with ``metrics.json``) to ``out_html``.

    ``table``: a benchmark table (:func:`mddpm.benchmark.table.build_table`) to show as Table 1 with
    p-values and across-run statistics; its ``evaluations`` entries name the runs. Examples and
    precision-recall curves are drawn for the first evaluation of each method × test set;
    ``examples`` pictures each, as evaluate stored them. Returns the path.
    """
    if not evaluations:
        raise MddpmError(f"{out_html}: no evaluations to report")
    labels = dict(labels or {})
    if table:
        labels.update({r["method"]: r["label"] for r in table["rows"]})
    evals = load_evaluations(evaluations, table, labels)
    methods = list(dict.fromkeys(ev.method for ev in evals))
    if table:
        methods = [r["method"] for r in table["rows"] if r["method"] in methods]
    columns = list(dict.fromkeys(ev.column for ev in evals))
    first: dict[tuple[str, str], ReportEvaluation] = {}
    for ev in evals:
        first.setdefault((ev.method, ev.column), ev)
    curves = {key: figures.pr_curve(ev) for key, ev in first.items()}

    dashed = {labels.get(r["method"], r["method"]) for r in (table or {}).get("rows", []) if r["extra"]}
    pr_figures = []
    for column in columns:
        shown = [(labels.get(m, m), c) for m in methods if (m, column) in first
                 if (c := curves.get((m, column))) and c["recall"]]
        if shown:
            pr_figures.append({"column": column, "volumes": shown[0][1].get("volumes"),
                               "png": pr_figure(shown, column.split("/", 1)[1], dashed)})
    scales = {}
    for ev in evals:
        if ev.column not in scales:
            scales[ev.column] = lesion_scale(ev.metrics)

    context = {
        "title": title, "version": __version__, "created": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "table": table, "evals": evals, "n_first": len(first), "columns": columns,
        "methods": [_method_section(m, labels.get(m, m), [ev for ev in evals if ev.method == m], columns, first,
                                    curves, len(methods), examples) for m in methods],
        "summary": _summary(evals), "table1": _table1(table) if table else None,
        "rules": _table_rules(table) if table else [], "published": published_values(table) if table else None,
        "lesion_scales": [(column, scale.sentence()) for column, scale in scales.items() if scale],
        "pr_figures": pr_figures, "protocol": evals[0].metrics.get("protocol"),
    }
    doc = _environment().get_template("report.html.j2").render(context)
    out = Path(out_html)
    with atomic_write(out) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    return out


def _summary(evals: list[ReportEvaluation]) -> dict:
    """The per-evaluation table: threshold rules in order of appearance, the default, whether runs differ."""
    return {"rules": list(dict.fromkeys(r for ev in evals for r in ev.rules)),
            "default": evals[0].default_rule if evals else "bisection",
            "show_run": len({(ev.method, ev.column) for ev in evals}) < len(evals)}


def _table_rules(table: dict) -> list[str]:
    return list(dict.fromkeys(rule for r in table["rows"] for c in r["cells"].values() for rule in c["dice_by_rule"]))


def _best(rows: list[dict], key: str, metric: str) -> set[str]:
    """Methods with the column's highest mean (none when fewer than two rows have a value)."""
    values = [(r["cells"][key][metric]["mean"], r["method"]) for r in rows
              if key in r["cells"] and r["cells"][key][metric]["mean"] is not None]
    if len(values) < 2:
        return set()
    top = max(v for v, _ in values)
    return {m for v, m in values if v == top}


def _table1(table: dict) -> dict:
    """Table 1's best cells per column, where the extra rows start, and its explanatory text."""
    rows, cols = table["rows"], table["columns"]
    best = {(c["key"], m): _best(rows, c["key"], m) for c in cols for m in ("dice", "auprc")}
    first_extra = next((i for i, r in enumerate(rows) if r["extra"]), None)
    return {"best": best, "first_extra": first_extra, "notes": table1_notes(table)}
