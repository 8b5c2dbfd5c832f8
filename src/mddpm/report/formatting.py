"""Formatters shared by every rendering of Table 1 (Markdown, CSV, HTML): percentages, p-values,
seconds, CSV numbers and the experiment's published values."""

from __future__ import annotations

import math

from mddpm.evaluation.metrics_files import ORACLE_NOTE


def table1_notes(table: dict) -> dict[str, str]:
    """Table 1's explanatory text, the one copy every rendering (Markdown, HTML) shows: ``cells`` (what a
    cell is), ``p`` (what the p-values are; '' without a reference method), ``oracle``, ``rules``, ``time``."""
    runs = max((c["dice"]["n_runs"] for r in table["rows"] for c in r["cells"].values()), default=0)
    spread = (f"mean ± std across runs (up to {runs}) of each run's per-volume mean on the test split (population "
              "std, ddof 0; a cell without ± comes from one run)" if runs > 1
              else "the per-volume mean on the test split of a single run (no spread across runs)")
    reference = table.get("reference_label")
    return {
        "cells": f"DICE and AUPRC in %: {spread}. DICE at the threshold chosen on the validation split by the "
                 f"{rule_name(table['rule'])} rule.",
        "p": (f"p: paired Wilcoxon signed-rank test (two-sided) against {reference} on per-volume scores, pairs by "
              "(run, case) pooled over runs (repeated cases make it optimistic); Δ: mean difference (method − "
              "reference) in points." + _no_p(table) if reference else ""),
        "oracle": ORACLE_NOTE,
        "rules": "The threshold rules side by side: bisection = the published 10-step search for the best pooled Dice "
                 "on the validation split (default); exact optimum = the exact best pooled-Dice threshold on the "
                 "validation split; FPR r = the threshold with voxel false-positive rate r on healthy validation "
                 "scans (no lesion labels).",
        "time": "Wall-clock seconds (CPU seconds of the process and its workers in brackets) summed over runs, as "
                "recorded when each stage ran.",
    }


def _no_p(table: dict) -> str:
    """The note on cells without a p-value: too few pairs (the table's ``statistics.min_pairs``)."""
    least = (table.get("statistics") or {}).get("min_pairs")
    return (f" No p (–) from fewer than {least} pairs: with n pairs the two-sided test cannot go below 2/2^n "
            "(0.0625 at n = 5)." if least else "")


def percent(stat: dict | None) -> str:
    """A statistic in % as text: ``"12.34 ± 1.05"``, ``"12.34"`` from one value, ``–`` without a value."""
    return " ± ".join(part for part in percent_parts(stat) if part is not None)


def percent_parts(stat: dict | None) -> tuple[str, str | None]:
    """(mean, std) of a statistic in % with two decimals; std None when it comes from one value (``n``
    or ``n_runs`` below 2); ``("–", None)`` without a finite mean."""
    mean = (stat or {}).get("mean")
    if mean is None or not math.isfinite(mean):
        return "–", None
    std, n = stat.get("std"), stat.get("n", stat.get("n_runs"))
    if std is None or n is not None and n < 2:
        return f"{100 * mean:.2f}", None
    return f"{100 * mean:.2f}", f"{100 * std:.2f}"


def rule_name(rule: str) -> str:
    """A threshold rule for people: ``exact optimum``, ``FPR 0.05``."""
    names = {"bisection": "bisection", "exact": "exact optimum"}
    return names.get(rule, rule.replace("fpr-", "FPR ") if rule.startswith("fpr-") else rule)


def format_p(test: dict | None) -> str:
    """A p-value for people: ``<0.001``, ``0.012``, ``0.43``; ``–`` when there is none."""
    if not test or test.get("p") is None:
        return "–"
    p = test["p"]
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def format_seconds(wall: float, cpu: float | None) -> str:
    """``"123 s (240 s CPU)"``; without CPU time ``"123 s"``."""
    return f"{wall:.0f} s" + ("" if cpu is None else f" ({cpu:.0f} s CPU)")


def csv_number(v) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else repr(float(v))


def row_name(row: dict) -> str:
    name = row["label"]
    if row["reference"]:
        name += " (reference)"
    return name


def published_values(table: dict) -> tuple[list[str], list[tuple[str, list]]] | None:
    """The grid's published Table-1 values for the table's rows: (column names, [(row label,
    [(mean, std) or None per test set and metric])]); None when the grid gives none."""
    published = table.get("published")
    if not published:
        return None
    cols = table["columns"]
    names = [f"{c['test_set']} {m}" for c in cols for m in ("DICE", "AUPRC")]
    rows = []
    for r in table["rows"]:
        values = published["values"].get(r["method"])
        if values:
            cells = [(values.get(c["test_set"]) or {}).get(m) for c in cols for m in ("dice", "auprc")]
            rows.append((r["label"], cells))
    return names, rows
