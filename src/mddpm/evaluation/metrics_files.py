"""The text files of ``mddpm evaluate``: metrics.csv and metrics.md from its rows and report dict."""

from __future__ import annotations

import csv
import io
import math

from mddpm.evaluation.metrics import COUNT_NAMES, RATIO_NAMES

# what every table calls ``oracle_dice_bisection``, and what it is
ORACLE_LABEL = "ORACLE bisection Dice"
ORACLE_NOTE = ("ORACLE bisection Dice: the best Dice of the published 10-step bisection search run on each test "
               "volume's own labels. It looks at the test labels, so it is not a result; the search can miss the "
               "best threshold, so it is no upper bound either (it can be below DICE).")


def finite_or_none(obj):
    """JSON-safe copy: NaN and infinities become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _pm(stat: dict) -> str:
    return f"{fmt(stat['mean'])} ± {fmt(stat['std'])}" if stat["n"] else "n/a"


def csv_text(rows: list[dict], rules: list[str]) -> str:
    fixed = [k for k in rows[0] if k not in ("rules",)]
    columns = fixed + [f"{rule}.{m}" for rule in rules for m in RATIO_NAMES + COUNT_NAMES]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        values = [r[k] for k in fixed] + [r["rules"][rule][m] for rule in rules for m in RATIO_NAMES + COUNT_NAMES]
        writer.writerow(["" if isinstance(v, float) and not math.isfinite(v) else v for v in values])
    return buf.getvalue()


def markdown(report: dict) -> str:
    agg, rules = report["aggregate"], report["protocol"]["threshold"]["rules"]
    test, val = report["test"], report["val"]
    lines = [f"# Evaluation of `{test['split']}` ({test['cases']} volumes)", "",
             f"- maps: `{test['maps']}`",
             f"- thresholds chosen on: `{val['split']}` ({val['cases']} volumes, `{val['maps']}`)"]
    config = report.get("config") or {}
    if config.get("method"):
        lines.append(f"- method: `{config['method']}` (preset `{config.get('preset')}`)")
    lines += ["", "## Threshold-free (per volume, mean ± std)", "", "| metric | mean ± std | n |", "|---|---|---|"]
    names = {"auprc": "AUPRC", "auroc": "AUROC", "oracle_dice_bisection": ORACLE_LABEL,
             "oracle_dice_exact": "ORACLE best Dice (exact, own labels)"}
    for key, name in names.items():
        if key in agg:
            lines.append(f"| {name} | {_pm(agg[key])} | {agg[key]['n']} |")
    components = report["protocol"]["postprocess"]["components"]["removed_if_voxels_at_most"]
    lines += ["", f"## Thresholded (A > τ, components ≤ {components} voxels removed)", "",
              "| rule | τ | val pooled Dice | Dice (mean ± std) | pooled Dice | precision | recall | FPR | FDR |",
              "|---|---|---|---|---|---|---|---|---|"]
    for rule in rules:
        th, a, p = report["thresholds"][rule], agg["rules"][rule], report["pooled"][rule]
        label = f"**{rule}** (default)" if rule == report["default_rule"] else rule
        lines.append(f"| {label} | {fmt(th['threshold'], 6)} | {fmt(th['dice'])} | {_pm(a['dice'])} "
                     f"| {fmt(p['dice'])} | {_pm(a['precision'])} | {_pm(a['recall'])} | {_pm(a['fpr'])} "
                     f"| {_pm(a['fdr'])} |")
    dice_columns = " | ".join(f"Dice ({r})" for r in rules)
    lines += ["", "## Per case", "", f"| case | lesion voxels | AUPRC | AUROC | {dice_columns} |",
              "|---|---|---|---|" + "---|" * len(rules)]
    for c in report["cases"]:
        dices = " | ".join(fmt(c["rules"][r]["dice"]) for r in rules)
        lines.append(f"| {c['case_id']} | {c['lesion_voxels']} | {fmt(c['auprc'])} | {fmt(c['auroc'])} | {dices} |")
    return "\n".join(lines) + "\n"
