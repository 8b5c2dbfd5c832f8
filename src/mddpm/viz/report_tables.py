"""The report's HTML tables: per-evaluation summary, Table 1 with p-values, every metric, published
numbers, time; and collapsible JSON."""

from __future__ import annotations

import html
import json
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mddpm.viz.report import _Eval


def esc(x) -> str:
    return html.escape(str(x))


def _pct(mean, std=None, n=None) -> str:
    if mean is None or not math.isfinite(mean):
        return "–"
    if std is None or n is not None and n < 2:
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f}<span class=pm> ± {100 * std:.2f}</span>"


def _stat_pct(stat: dict | None) -> str:
    """A metrics.json aggregate ({mean, std, n}) or an across-runs dict ({mean, std, n_runs}) in %."""
    if not stat:
        return "–"
    return _pct(stat.get("mean"), stat.get("std"), stat.get("n", stat.get("n_runs")))


def _rule_header(rule: str, default: str) -> str:
    names = {"bisection": "bisection", "exact": "exact optimum"}
    name = names.get(rule, rule.replace("fpr-", "FPR ") if rule.startswith("fpr-") else rule)
    return f"DICE<br><small>{esc(name)}{' · default' if rule == default else ''}</small>"


_ORACLE_TH = 'best DICE <span class="badge" title="best threshold per volume on its own test labels">ORACLE</span>'


def summary_table(evals: list[_Eval]) -> str:
    """Per evaluation: metrics mean ± std over its volumes."""
    rules = list(dict.fromkeys(r for ev in evals for r in ev.rules))
    default = evals[0].default_rule if evals else "bisection"
    show_run = len({(ev.method, ev.column) for ev in evals}) < len(evals)  # several runs of one method and test set
    head = ("<tr><th>Method</th><th class=l>Test set</th>" + ("<th class=l>Run</th>" if show_run else "") + "<th>volumes</th>"
            + "".join(f"<th>{_rule_header(r, default)}</th>" for r in rules)
            + f"<th>AUPRC</th><th>AUROC</th><th class=oracle>{_ORACLE_TH}</th></tr>")
    body = []
    for ev in evals:
        agg, th = ev.metrics["aggregate"], ev.metrics["thresholds"]
        cells = []
        for r in rules:
            if r in agg.get("rules", {}):
                cells.append(f"<td>{_stat_pct(agg['rules'][r]['dice'])}<span class=sub>τ = {th[r]['threshold']:.4g}</span></td>")
            else:
                cells.append("<td>–</td>")
        run = f"<td class=l>{esc(ev.run)}</td>" if show_run else ""
        body.append(f"<tr><td>{esc(ev.label)}</td><td class=l>{esc(ev.test_set)}</td>{run}"
                    f"<td>{ev.metrics['test']['cases']}</td>{''.join(cells)}<td>{_stat_pct(agg.get('auprc'))}</td>"
                    f"<td>{_stat_pct(agg.get('auroc'))}</td><td class=oracle>{_stat_pct(agg.get('oracle_dice_bisection'))}</td></tr>")
    return (f'<div class=scroll><table class="summary"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table></div>'
            '<p class=note>In %, mean ± std over the volumes of each test split (population std). DICE: per-volume Dice '
            'after thresholding at τ (chosen on the validation split by the named rule) and removing components of '
            '≤ 7 voxels. AUPRC: per-volume average precision. The ORACLE best DICE picks each volume\'s own best '
            'threshold from its test labels: an upper bound, not a result.</p>')


def _best_rows(rows: list[dict], key: str, metric: str) -> set[str]:
    values = [(r["cells"][key][metric]["mean"], r["method"]) for r in rows
              if key in r["cells"] and r["cells"][key][metric]["mean"] is not None]
    if len(values) < 2:
        return set()
    top = max(v for v, _ in values)
    return {m for v, m in values if v == top}


def _p_html(test: dict | None) -> str:
    from mddpm.report.formatting import format_p

    if not test or test.get("p") is None:
        return ""
    delta = test.get("mean_difference")
    sign = "" if delta is None else f" · Δ {100 * delta:+.2f}"
    return f'<span class=sub>p {esc(format_p(test))}{sign}</span>'


def table1(table: dict) -> str:
    cols, rows = table["columns"], table["rows"]
    head1 = "<tr><th rowspan=2>Model</th>" + "".join(f"<th colspan=2 class=c>{esc(c['test_set'])}</th>" for c in cols) + "</tr>"
    head2 = "<tr>" + "<th>DICE</th><th>AUPRC</th>" * len(cols) + "</tr>"
    best = {(c["key"], m): _best_rows(rows, c["key"], m) for c in cols for m in ("dice", "auprc")}
    body, extra_started = [], False
    for r in rows:
        if r["extra"] and not extra_started:
            extra_started = True
            body.append(f"<tr class=group><td colspan={1 + 2 * len(cols)}>Not rows of the paper's Table 1</td></tr>")
        cls = " class=reference" if r["reference"] else ""
        name = esc(r["label"]) + (' <span class="badge ref">reference</span>' if r["reference"] else "")
        cells = []
        for c in cols:
            cell = r["cells"].get(c["key"])
            for m in ("dice", "auprc"):
                if not cell:
                    cells.append("<td class=missing>not run</td>")
                    continue
                b = " class=best" if r["method"] in best[(c["key"], m)] else ""
                cells.append(f"<td{b}>{_stat_pct(cell[m])}{_p_html(cell['p_' + m])}</td>")
        body.append(f"<tr{cls}><td>{name}</td>{''.join(cells)}</tr>")
    runs = max((c["dice"]["n_runs"] for r in rows for c in r["cells"].values()), default=0)
    ref = table.get("reference_label")
    spread = (f"mean ± std across runs (up to {runs}) of each run's per-volume mean (population std)" if runs > 1
              else "per-volume mean of a single run (no spread across runs)")
    note = (f"In %, {spread}. DICE at the threshold chosen on the validation split (rule "
            f"<code>{esc(table['rule'])}</code>).{' Bold: best in the column.' if len(rows) > 1 else ''}")
    if ref:
        note += (f" p: paired Wilcoxon signed-rank test against {esc(ref)} on per-volume scores, pairs by (run, case) "
                 "pooled over runs (repeated cases make it optimistic); Δ: mean difference in points.")
    return (f'<div class=scroll><table class="summary t1"><thead>{head1}{head2}</thead><tbody>{"".join(body)}</tbody></table></div>'
            f"<p class=note>{note}</p>")


def every_metric_table(table: dict) -> str:
    parts = []
    rules = list(dict.fromkeys(rule for r in table["rows"] for c in r["cells"].values() for rule in c["dice_by_rule"]))
    for c in table["columns"]:
        head = ("<tr><th>Model</th><th>runs</th><th>volumes</th>" + "".join(f"<th>{_rule_header(r, table['rule'])}</th>" for r in rules)
                + f"<th>AUPRC</th><th>AUROC</th><th class=oracle>{_ORACLE_TH}</th></tr>")
        body = []
        for r in table["rows"]:
            cell = r["cells"].get(c["key"])
            if not cell:
                continue
            dice = "".join(f"<td>{_stat_pct(cell['dice_by_rule'].get(rule))}</td>" for rule in rules)
            body.append(f"<tr><td>{esc(r['label'])}</td><td>{len(cell['runs'])}</td><td>{cell['volumes'][0]}</td>{dice}"
                        f"<td>{_stat_pct(cell['auprc'])}</td><td>{_stat_pct(cell['auroc'])}</td>"
                        f"<td class=oracle>{_stat_pct(cell['oracle_dice'])}</td></tr>")
        parts.append(f"<h3>{esc(c['dataset'])} · {esc(c['test_set'])}</h3>"
                     f'<div class=scroll><table class="summary"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table></div>')
    return ("".join(parts) + "<p class=note>In %, mean ± std across runs. The threshold rules side by side: "
            "<b>bisection</b> = the published 10-step search for the best pooled Dice on the validation split (default); "
            "<b>exact optimum</b> = the exact best pooled-Dice threshold on the validation split; <b>FPR r</b> = the "
            "threshold with voxel false-positive rate r on healthy validation scans (no lesion labels). ORACLE uses the "
            "test labels: an upper bound, not a result.</p>")


def published_table(table: dict) -> str:
    from mddpm.report.formatting import published_values

    published = published_values(table)
    if not published:
        return ""
    names, rows = published
    head = "<tr><th>Model</th>" + "".join(f"<th>{esc(n)}</th>" for n in names) + "</tr>"
    body = "".join(f"<tr><td>{esc(label)}</td>" + "".join(
        "<td>–</td>" if not v else f"<td>{v[0]:.2f}<span class=pm> ± {v[1]:.2f}</span></td>" for v in cells) + "</tr>"
        for label, cells in rows)
    return (f"<details><summary>Published values ({esc(table['published'].get('source', ''))})</summary>"
            f'<table class="summary"><thead>{head}</thead><tbody>{body}</tbody></table></details>')


def seconds_table(table: dict) -> str:
    from mddpm.report.formatting import format_seconds

    seconds = table.get("seconds")
    if not seconds:
        return ""
    body = "".join(f"<tr><td>{esc(r['label'])}</td><td>{s['runs']}</td>"
                   + "".join(f"<td>{esc(format_seconds(s['wall'][k], s['cpu'][k]))}</td>" for k in ("train", "predict", "evaluate"))
                   + "</tr>" for r in table["rows"] if (s := seconds.get(r["method"])))
    return ('<h2 id="time">Time</h2><table class="summary"><thead><tr><th>Model</th><th>runs</th><th>train</th>'
            f"<th>predict</th><th>evaluate</th></tr></thead><tbody>{body}</tbody></table>"
            "<p class=note>Wall-clock seconds (CPU seconds of the process and its workers in brackets), summed over "
            "runs, as recorded when each stage ran.</p>")


def json_details(summary: str, obj) -> str:
    return f"<details><summary>{esc(summary)}</summary><pre>{esc(json.dumps(obj, indent=2, default=str))}</pre></details>"
