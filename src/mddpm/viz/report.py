"""One self-contained HTML report of evaluations (``mddpm demo``, ``mddpm benchmark``).

:func:`write_report` reads evaluation folders (``metrics.json`` and ``figures/`` written by
``mddpm evaluate``) and, where they still exist, the maps folders and prepared caches that
``metrics.json`` names. The HTML has inline CSS and base64 PNG images only: no script, no external
fetch. It shows

- a summary table: per method × test set DICE for every threshold rule side by side (the default
  rule first), AUPRC, AUROC and the ORACLE best Dice (labelled: it looks at the test labels). Given a
  benchmark ``table`` (:func:`mddpm.benchmark.build_table`) the values are mean ± std across runs,
  with p-values; otherwise mean ± std over the volumes of each evaluation;
- precision-recall curves, POOLED over all voxels of the post-processed maps of the test volumes
  (the maps are post-processed again here as the evaluation did; scores rounded to float16 for
  counting, which is finer than any plot). Without the maps folder, no curve;
- per test set, one line on its lesion sizes against the post-processing's, saying when typical
  lesions are too small to survive it (:mod:`mddpm.viz.lesion_scale`; needs the prepared cache);
- per method, the training curve of every run from ``RUN/logs/csv/metrics.csv``
  (:mod:`mddpm.viz.training_curves`), and example cases (best, median and worst Dice at the default
  rule: input, reconstruction, anomaly map with its colour bar, thresholded map, ground truth),
  rendered from the maps, else the evaluation's own figures;
- per run, the configuration as collapsible JSON; the protocol settings at the end.

With ``cache_dir`` the curves and pictures are cached per ``metrics.json`` content, so a benchmark
rebuilding its report does not post-process the maps again.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from mddpm import __version__
from mddpm.errors import MddpmError
from mddpm.io import atomic_write, read_json, write_json
from mddpm.viz.lesion_scale import lesion_scale
from mddpm.viz.training_curves import read_losses, training_curve_figure

EXAMPLES = 3
_HALF_CODES = 1 << 16
_CURVE_POINTS = 1000
_COLOURS = ["#3b5bdb", "#e8590c", "#2b8a3e", "#c2255c", "#5f3dc4", "#0b7285", "#a61e4d", "#5c940d", "#862e9c",
            "#d9480f", "#495057"]


# ---- precision-recall ----------------------------------------------------------------------------

def sortable_half_key(x: torch.Tensor) -> torch.Tensor:
    """Codes 0..65535 (int64, same shape) that order like the values of ``x`` rounded to float16
    (−0 counts as +0). Equal codes = equal float16 values."""
    bits = ((x.half() + 0.0).view(torch.int16).to(torch.int32)) & 0xFFFF  # + 0.0: -0 becomes +0
    return torch.where(bits >= 0x8000, 0xFFFF - bits, bits + 0x8000).long()


def pr_from_histograms(total: np.ndarray, positive: np.ndarray) -> dict:
    """Precision and recall at every distinct score from counts per score code (ascending codes).

    ``total[k]`` voxels and ``positive[k]`` lesion voxels have code ``k``; predicting ``code >= k``
    for each ``k`` from high to low gives the curve. Returns {"recall", "precision" (thinned to about
    1000 points, recall ascending), "ap" (average precision, step-wise as scikit-learn, over all
    codes), "voxels", "lesion_voxels"}; no curve (empty lists, ap None) without lesion voxels.
    """
    t, p = np.asarray(total, np.int64)[::-1], np.asarray(positive, np.int64)[::-1]
    keep = t > 0
    t, p = t[keep], p[keep]
    n_pos = int(p.sum())
    out = {"recall": [], "precision": [], "ap": None, "voxels": int(t.sum()), "lesion_voxels": n_pos}
    if n_pos == 0:
        return out
    predicted, tp = np.cumsum(t), np.cumsum(p)
    precision, recall = tp / predicted, tp / n_pos
    out["ap"] = float(np.sum(np.diff(recall, prepend=0.0) * precision))
    idx = np.unique(np.concatenate([[0, recall.size - 1],
                                    np.searchsorted(recall, np.linspace(0, 1, _CURVE_POINTS + 1)).clip(0, recall.size - 1)]))
    out["recall"], out["precision"] = recall[idx].tolist(), precision[idx].tolist()
    return out


def pooled_pr_curve(maps_dir: str | os.PathLike, device: str = "cpu") -> dict:
    """Pooled precision-recall curve of a maps folder: every voxel of every post-processed map (the
    published post-processing, as ``mddpm evaluate``) against its label. See :func:`pr_from_histograms`;
    adds "volumes"."""
    from mddpm.evaluation.evaluate import open_maps
    from mddpm.evaluation.postprocess import postprocess_map

    maps = open_maps(maps_dir, "test")
    dev = torch.device(device)
    total = torch.zeros(_HALF_CODES, dtype=torch.int64, device=dev)
    positive = torch.zeros(_HALF_CODES, dtype=torch.int64, device=dev)
    with torch.inference_mode():
        for cid in maps.case_ids:
            score, mask, label = maps.load(cid, dev)
            key = sortable_half_key(postprocess_map(score, mask))
            total += torch.bincount(key.reshape(-1), minlength=_HALF_CODES)
            positive += torch.bincount(key[label], minlength=_HALF_CODES)
    return {**pr_from_histograms(total.cpu().numpy(), positive.cpu().numpy()), "volumes": len(maps.case_ids)}


# ---- evaluations ---------------------------------------------------------------------------------

@dataclass
class _Eval:
    """An evaluation folder with its metrics and display names."""

    path: Path
    metrics: dict
    method: str
    label: str
    test_set: str
    run: str
    dataset: str

    @property
    def rules(self) -> list[str]:
        return list(self.metrics.get("thresholds", {}))

    @property
    def default_rule(self) -> str:
        return self.metrics.get("default_rule", "bisection")

    @property
    def column(self) -> str:
        return f"{self.dataset}/{self.test_set}"


def _load_evaluations(evaluations: list, table: dict | None, labels: dict[str, str]) -> list[_Eval]:
    named = {str(Path(e["path"]).resolve()): e for e in (table or {}).get("evaluations", []) if e.get("path")}
    out = []
    for folder in evaluations:
        folder = Path(folder).resolve()
        metrics = read_json(folder / "metrics.json")
        if metrics.get("format") != "mddpm-metrics":
            raise MddpmError(f"{folder / 'metrics.json'}: not a metrics file of mddpm evaluate")
        config = metrics.get("config") or {}
        info = named.get(str(folder))
        if info:
            method, test_set, run, dataset = info["method"], info["test_set"], info["run"], info["dataset"]
        else:
            method = config.get("method", "?")
            test_set = metrics["test"].get("split", "?")
            run = Path(metrics["run"]).name if metrics.get("run") else folder.name
            dataset = Path(metrics["test"].get("dataset") or "").name or "data"
        out.append(_Eval(folder, metrics, method, labels.get(method, method), test_set, run, dataset))
    return out


def _run_label(run: str) -> str:
    """"run seed3141" for a run folder named seed3141; a folder already named run… as it is."""
    return run if run.lower().startswith("run") else f"run {run}"


def _cache_folder(cache_dir: Path | None, ev: _Eval) -> Path | None:
    if cache_dir is None:
        return None
    digest = hashlib.sha256((ev.path / "metrics.json").read_bytes()).hexdigest()[:20]
    return Path(cache_dir) / digest


def _pr_curve(ev: _Eval, cache_dir: Path | None, device: str) -> dict | None:
    """The pooled PR curve of an evaluation's test maps (cached), or None if the maps are gone."""
    cache = _cache_folder(cache_dir, ev)
    if cache is not None and (cache / "pr.json").is_file():
        return read_json(cache / "pr.json")
    maps = Path(ev.metrics["test"]["maps"])
    if not (maps / "predict.json").is_file():
        return None
    try:
        curve = pooled_pr_curve(maps, device)
    except MddpmError:
        return None  # maps or prepared cache changed since the evaluation
    if cache is not None:
        write_json(cache / "pr.json", curve)
    return curve


def _example_cases(ev: _Eval, n: int) -> list[tuple[str, str]]:
    """(case id, caption): best, median and worst per-volume Dice at the default rule (lesion cases)."""
    rule = ev.default_rule
    scored = [(c["rules"][rule]["dice"], c["case_id"]) for c in ev.metrics.get("cases", [])
              if c.get("lesion_voxels") and c["rules"].get(rule, {}).get("dice") is not None]
    scored.sort(key=lambda t: (-t[0], t[1]))
    if not scored:
        return []
    picks = {"best Dice": 0, "median Dice": len(scored) // 2, "worst Dice": len(scored) - 1}
    chosen, seen = [], set()
    for caption, i in picks.items():
        if scored[i][1] not in seen and len(chosen) < n:
            seen.add(scored[i][1])
            chosen.append((scored[i][1], f"{caption}: {scored[i][0]:.3f}"))
    return chosen


def _render_examples(ev: _Eval, n: int, device: str) -> list[tuple[str, bytes]] | None:
    """Pictures of :func:`_example_cases` rendered from the maps; None if the maps are gone."""
    from mddpm.evaluation.evaluate import open_maps
    from mddpm.evaluation.metrics import binarise
    from mddpm.evaluation.postprocess import postprocess_map, remove_small_components
    from mddpm.viz.cases import render_case_figure

    maps_dir = Path(ev.metrics["test"]["maps"])
    if not (maps_dir / "predict.json").is_file() or n == 0:
        return None
    try:
        maps = open_maps(maps_dir, "test")
        threshold = ev.metrics["thresholds"][ev.default_rule]["threshold"]
        out = []
        with torch.inference_mode():
            for cid, caption in _example_cases(ev, n):
                score, mask, label = maps.load(cid, torch.device(device))
                score = postprocess_map(score, mask)
                pred = remove_small_components(binarise(score, threshold))
                image = np.asarray(maps.prepared.volume(cid)[0])
                png = render_case_figure(image, maps.reconstruction(cid), score.cpu().numpy(), pred.cpu().numpy(),
                                         label.cpu().numpy(), title=f"{cid} ({caption}, {ev.default_rule})")
                out.append((f"{cid}: {caption}", png))
        return out
    except MddpmError:
        return None


def _examples(ev: _Eval, n: int, cache_dir: Path | None, device: str) -> list[tuple[str, bytes]]:
    """Example pictures (caption, PNG bytes): from the maps (cached), else the evaluation's figures."""
    cache = _cache_folder(cache_dir, ev)
    index = cache / f"examples{n}.json" if cache is not None else None
    if index is not None and index.is_file():
        return [(caption, (cache / name).read_bytes()) for caption, name in read_json(index)["examples"]]
    pictures = _render_examples(ev, n, device)
    if pictures is None:
        return [(f"{p.stem} (figure of mddpm evaluate)", p.read_bytes())
                for p in sorted((ev.path / "figures").glob("*.png"))[:n]]
    if cache is not None:
        names = []
        for i, (caption, png) in enumerate(pictures):
            with atomic_write(cache / f"example{n}-{i}.png") as tmp:
                tmp.write_bytes(png)
            names.append((caption, f"example{n}-{i}.png"))
        write_json(index, {"examples": names})
    return pictures


# ---- pictures ------------------------------------------------------------------------------------

def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


def pr_figure(curves: list[tuple[str, dict]], title: str, dashed: set[str] = frozenset()) -> bytes:
    """PNG of precision-recall curves ``(name, curve)`` (curves from :func:`pooled_pr_curve`); names in
    ``dashed`` are drawn dashed. When every precision stays below 0.25 the y axis is zoomed (and says so)."""
    shown = [(name, c) for name, c in curves if c and c["recall"]]
    rows = math.ceil(len(shown) / 2)
    fig = Figure(figsize=(6.0, 4.0 + 0.19 * rows))
    ax = fig.subplots()
    for i, (name, curve) in enumerate(shown):
        ax.plot(curve["recall"], curve["precision"], color=_COLOURS[i % len(_COLOURS)], lw=1.6,
                ls="--" if name in dashed else "-", label=f"{name} · AP {curve['ap']:.3g}")
    top = max((max(c["precision"]) for _, c in shown), default=1.0)
    zoomed = top < 0.25
    ax.set_xlim(0, 1)
    ax.set_ylim(0, top * 1.08 if zoomed else 1.02)
    ax.set_xlabel("recall (pooled lesion voxels)")
    ax.set_ylabel("precision" + (" (axis zoomed)" if zoomed else ""))
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if shown:
        ax.set_title(title + " (AP: pooled)", fontsize=11)
        ax.legend(fontsize=7.2, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2 if len(shown) > 1 else 1,
                  frameon=False, handlelength=2.2, columnspacing=1.2)
    fig.tight_layout()
    return _png(fig)


def _img(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{html.escape(alt)}">'


# ---- HTML pieces ---------------------------------------------------------------------------------

def _e(x) -> str:
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
    return f"DICE<br><small>{_e(name)}{' · default' if rule == default else ''}</small>"


_ORACLE_TH = 'best DICE <span class="badge" title="best threshold per volume on its own test labels">ORACLE</span>'


def _summary_from_evaluations(evals: list[_Eval]) -> str:
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
        run = f"<td class=l>{_e(ev.run)}</td>" if show_run else ""
        body.append(f"<tr><td>{_e(ev.label)}</td><td class=l>{_e(ev.test_set)}</td>{run}"
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
    from mddpm.benchmark import format_p

    if not test or test.get("p") is None:
        return ""
    delta = test.get("mean_difference")
    sign = "" if delta is None else f" · Δ {100 * delta:+.2f}"
    return f'<span class=sub>p {_e(format_p(test))}{sign}</span>'


def _table1(table: dict) -> str:
    cols, rows = table["columns"], table["rows"]
    head1 = "<tr><th rowspan=2>Model</th>" + "".join(f"<th colspan=2 class=c>{_e(c['test_set'])}</th>" for c in cols) + "</tr>"
    head2 = "<tr>" + "<th>DICE</th><th>AUPRC</th>" * len(cols) + "</tr>"
    best = {(c["key"], m): _best_rows(rows, c["key"], m) for c in cols for m in ("dice", "auprc")}
    body, extra_started = [], False
    for r in rows:
        if r["extra"] and not extra_started:
            extra_started = True
            body.append(f"<tr class=group><td colspan={1 + 2 * len(cols)}>Not rows of the paper's Table 1</td></tr>")
        cls = " class=reference" if r["reference"] else ""
        name = _e(r["label"]) + (' <span class="badge ref">reference</span>' if r["reference"] else "")
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
            f"<code>{_e(table['rule'])}</code>).{' Bold: best in the column.' if len(rows) > 1 else ''}")
    if ref:
        note += (f" p: paired Wilcoxon signed-rank test against {_e(ref)} on per-volume scores, pairs by (run, case) "
                 "pooled over runs (repeated cases make it optimistic); Δ: mean difference in points.")
    return (f'<div class=scroll><table class="summary t1"><thead>{head1}{head2}</thead><tbody>{"".join(body)}</tbody></table></div>'
            f"<p class=note>{note}</p>")


def _every_metric(table: dict) -> str:
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
            body.append(f"<tr><td>{_e(r['label'])}</td><td>{len(cell['runs'])}</td><td>{cell['volumes'][0]}</td>{dice}"
                        f"<td>{_stat_pct(cell['auprc'])}</td><td>{_stat_pct(cell['auroc'])}</td>"
                        f"<td class=oracle>{_stat_pct(cell['oracle_dice'])}</td></tr>")
        parts.append(f"<h3>{_e(c['dataset'])} · {_e(c['test_set'])}</h3>"
                     f'<div class=scroll><table class="summary"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table></div>')
    return ("".join(parts) + "<p class=note>In %, mean ± std across runs. The threshold rules side by side: "
            "<b>bisection</b> = the published 10-step search for the best pooled Dice on the validation split (default); "
            "<b>exact optimum</b> = the exact best pooled-Dice threshold on the validation split; <b>FPR r</b> = the "
            "threshold with voxel false-positive rate r on healthy validation scans (no lesion labels). ORACLE uses the "
            "test labels: an upper bound, not a result.</p>")


def _published(table: dict) -> str:
    from mddpm.benchmark import published_values

    published = published_values(table)
    if not published:
        return ""
    names, rows = published
    head = "<tr><th>Model</th>" + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>"
    body = "".join(f"<tr><td>{_e(label)}</td>" + "".join(
        "<td>–</td>" if not v else f"<td>{v[0]:.2f}<span class=pm> ± {v[1]:.2f}</span></td>" for v in cells) + "</tr>"
        for label, cells in rows)
    return (f"<details><summary>Published values ({_e(table['published'].get('source', ''))})</summary>"
            f'<table class="summary"><thead>{head}</thead><tbody>{body}</tbody></table></details>')


def _seconds(table: dict) -> str:
    from mddpm.benchmark import format_seconds

    seconds = table.get("seconds")
    if not seconds:
        return ""
    body = "".join(f"<tr><td>{_e(r['label'])}</td><td>{s['runs']}</td>"
                   + "".join(f"<td>{_e(format_seconds(s['wall'][k], s['cpu'][k]))}</td>" for k in ("train", "predict", "evaluate"))
                   + "</tr>" for r in table["rows"] if (s := seconds.get(r["method"])))
    return ('<h2 id="time">Time</h2><table class="summary"><thead><tr><th>Model</th><th>runs</th><th>train</th>'
            f"<th>predict</th><th>evaluate</th></tr></thead><tbody>{body}</tbody></table>"
            "<p class=note>Wall-clock seconds (CPU seconds of the process and its workers in brackets), summed over "
            "runs, as recorded when each stage ran.</p>")


def _json_details(summary: str, obj) -> str:
    return f"<details><summary>{_e(summary)}</summary><pre>{_e(json.dumps(obj, indent=2, default=str))}</pre></details>"


def _run_config(ev: _Eval) -> dict:
    m = ev.metrics
    return {"config": m.get("config"), "predict_settings": m.get("predict_settings"), "run": m.get("run"),
            "test": m.get("test"), "val": m.get("val"), "healthy_val": m.get("healthy_val"),
            "thresholds": {r: {k: v for k, v in t.items() if k != "steps"} for r, t in m.get("thresholds", {}).items()},
            "evaluation": str(ev.path)}


def _training_summary(config: dict) -> str:
    """"preset demo, 800 steps of batch 16" from a run's resolved config ('' when it has no training)."""
    train = config.get("train") or {}
    if not train.get("max_steps"):
        return ""
    return f"preset {config.get('preset', '?')}, {train['max_steps']:,} steps of batch {train.get('batch_size', '?')}"


def _lesion_scales(evals: list[_Eval]) -> str:
    """One line per test set: its lesion sizes against the post-processing's ('' without prepared caches)."""
    first = {}
    for ev in evals:
        first.setdefault(ev.column, ev)
    lines = [f"<li><b>{_e(column)}</b>: {_e(scale.sentence())}</li>"
             for column, ev in first.items() if (scale := lesion_scale(ev.metrics))]
    return f"<h3>Lesion sizes at this scale</h3><ul class=note>{''.join(lines)}</ul>" if lines else ""


def _training_curves(evs: list[_Eval], label: str) -> str:
    """The training curve of every run of a method, from the runs' CSV logs ('' when no log is left)."""
    runs = {}
    for ev in evs:
        if ev.run not in runs and ev.metrics.get("run"):
            runs[ev.run] = read_losses(ev.metrics["run"])
    shown = [(_run_label(run), losses) for run, losses in runs.items() if losses]
    if not shown:
        return ""
    return (f"<div class=plots><figure>{_img(training_curve_figure(shown, f'{label}: training'), 'training ' + label)}"
            "<figcaption>Loss against the optimiser step: training (thin line) and validation (dots) of each run, "
            "from RUN/logs/csv/metrics.csv.</figcaption></figure></div>")


def _method_description(method: str) -> str:
    from mddpm.registry import all_methods

    spec = all_methods().get(method)
    return spec.description if spec else ""


_CSS = """
:root{--fg:#1c2230;--muted:#5f6878;--line:#e4e7ee;--soft:#f5f6f9;--accent:#3553c8;--ref:#fff6dc;--best:#10233f}
*{box-sizing:border-box}
body{margin:0;background:var(--soft);color:var(--fg);font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1280px;margin:0 auto;background:#fff;padding:28px 40px 64px;min-height:100vh;box-shadow:0 0 0 1px var(--line)}
h1{font-size:27px;margin:0 0 4px;letter-spacing:-.01em}
h2{font-size:20px;margin:40px 0 12px;padding-top:8px;border-top:1px solid var(--line)}
h3{font-size:15.5px;margin:22px 0 8px}
.meta{color:var(--muted);font-size:13px;margin-bottom:14px}
.lead{max-width:900px;color:#333b4a}
nav{display:flex;flex-wrap:wrap;gap:6px 14px;font-size:13.5px;margin:12px 0 4px}
nav a{color:var(--accent);text-decoration:none}
nav a:hover{text-decoration:underline}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:13px;margin:6px 0}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:right;vertical-align:top;white-space:nowrap}
th:first-child,td:first-child,td.l,th.l{text-align:left}
thead th{background:var(--soft);font-weight:600;vertical-align:bottom;border-bottom:2px solid #d5d9e2;white-space:normal}
th.c{text-align:center}
th small{font-weight:400;color:var(--muted)}
tbody tr:hover td{background:#f9fafc}
tr.reference td{background:var(--ref)}
tr.group td{color:var(--muted);font-style:italic;text-align:left;background:none;padding-top:12px}
td.best{font-weight:700;color:var(--best)}
td.missing{color:#a0a6b2;font-style:italic}
.pm{color:var(--muted);font-weight:400}
.sub{display:block;color:var(--muted);font-size:11.5px;font-weight:400}
.oracle{color:#7a5b00}
th.oracle{background:#fbf3da}
.badge{display:inline-block;font-size:10.5px;font-weight:600;padding:0 6px;border-radius:9px;background:#f2d78b;color:#5b4300;vertical-align:1px;letter-spacing:.02em}
.badge.ref{background:#dbe4ff;color:#2b3f9e}
.scroll{overflow-x:auto;max-width:100%}
.note{color:var(--muted);font-size:12.5px;max-width:950px}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(430px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px}
figure img{display:block;width:100%;height:auto}
figcaption{font-size:12.5px;color:var(--muted);padding:4px 2px 0}
.strip figure{margin:8px 0}
.method{margin-top:8px}
.desc{color:#3b4352;margin:-4px 0 8px}
.empty{color:var(--muted);font-style:italic;font-size:13px}
details{margin:6px 0}
summary{cursor:pointer;color:var(--accent);font-size:13.5px}
pre{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:10px 12px;font-size:12px;line-height:1.45;overflow:auto;max-height:460px}
code{background:var(--soft);padding:0 4px;border-radius:4px;font-size:12.5px}
footer{margin-top:48px;color:var(--muted);font-size:12px;border-top:1px solid var(--line);padding-top:12px}
"""


def _anchor(text: str) -> str:
    return "m-" + "".join(ch if ch.isalnum() else "-" for ch in text)


# ---- the report ----------------------------------------------------------------------------------

def write_report(out_html: str | os.PathLike, evaluations: list, title: str, table: dict | None = None, *,
                 examples: int = EXAMPLES, cache_dir: str | os.PathLike | None = None, device: str = "cpu",
                 labels: dict[str, str] | None = None) -> Path:
    """Write the HTML report of ``evaluations`` (folders with ``metrics.json``) to ``out_html``.

    ``table``: a benchmark table (:func:`mddpm.benchmark.build_table`) to show as Table 1 with
    p-values and across-run statistics; its ``evaluations`` entries name the runs. Examples and
    precision-recall curves are drawn for the first evaluation of each method × test set;
    ``examples`` pictures each. ``device``: where maps are post-processed. Returns the path.
    """
    if not evaluations:
        raise MddpmError(f"{out_html}: no evaluations to report")
    labels = dict(labels or {})
    if table:
        labels.update({r["method"]: r["label"] for r in table["rows"]})
    cache = Path(cache_dir) if cache_dir is not None else None
    evals = _load_evaluations(evaluations, table, labels)
    methods = list(dict.fromkeys(ev.method for ev in evals))
    if table:
        methods = [r["method"] for r in table["rows"] if r["method"] in methods]
    columns = list(dict.fromkeys(ev.column for ev in evals))
    first: dict[tuple[str, str], _Eval] = {}
    for ev in evals:
        first.setdefault((ev.method, ev.column), ev)
    curves = {key: _pr_curve(ev, cache, device) for key, ev in first.items()}

    parts = [f"<header><h1>{_e(title)}</h1>",
             f"<div class=meta>mddpm {_e(__version__)} · {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} · "
             f"{len(methods)} method{'s' * (len(methods) != 1)} · {len(columns)} test set{'s' * (len(columns) != 1)} · "
             f"{len(evals)} evaluation{'s' * (len(evals) != 1)}</div>"]
    if table and table.get("grid", {}).get("description"):
        parts.append(f"<p class=lead>{_e(table['grid']['description'])}</p>")
    nav = ['<a href="#results">Results</a>', '<a href="#pr">Precision–recall</a>']
    nav += [f'<a href="#{_anchor(m)}">{_e(labels.get(m, m))}</a>' for m in methods]
    if table and table.get("seconds"):
        nav.append('<a href="#time">Time</a>')
    nav.append('<a href="#protocol">Protocol</a>')
    parts.append(f"<nav>{''.join(nav)}</nav></header>")

    parts.append('<h2 id="results">Results</h2>')
    if table:
        parts += [_table1(table), "<h3>Every metric and threshold rule</h3>", _every_metric(table), _published(table)]
        if len(evals) > len(first):
            parts.append(f"<details><summary>Each of the {len(evals)} evaluations (over volumes)</summary>"
                         f"{_summary_from_evaluations(evals)}</details>")
    else:
        parts.append(_summary_from_evaluations(evals))
    parts.append(_lesion_scales(evals))

    parts.append('<h2 id="pr">Precision–recall</h2>')
    dashed = {labels.get(r["method"], r["method"]) for r in (table or {}).get("rows", []) if r["extra"]}
    figures = []
    for column in columns:
        lines = [(labels.get(m, m), curves.get((m, column))) for m in methods if (m, column) in first]
        shown = [(name, c) for name, c in lines if c and c["recall"]]
        if shown:
            n_vol = shown[0][1].get("volumes")
            figures.append(f"<figure>{_img(pr_figure(shown, column.split('/', 1)[1], dashed), 'precision-recall ' + column)}"
                           f"<figcaption>{_e(column)}: pooled over all voxels of the {n_vol} post-processed test maps"
                           f"{' (first run of each method)' if table else ''}.</figcaption></figure>")
    parts.append(f"<div class=plots>{''.join(figures)}</div>" if figures else
                 "<p class=empty>No curves: the maps folders named in metrics.json are not available.</p>")
    parts.append("<p class=note>Pooled AP (all voxels of all test volumes together) differs from the table's AUPRC, "
                 "which is the mean of per-volume average precisions.</p>")

    for m in methods:
        evs = [ev for ev in evals if ev.method == m]
        label = labels.get(m, m)
        parts.append(f'<section class=method><h2 id="{_anchor(m)}">{_e(label)}</h2>')
        desc = _method_description(m)
        if desc:
            parts.append(f"<p class=desc><code>{_e(m)}</code> · {_e(desc)}</p>")
        trained = _training_summary(evs[0].metrics.get("config") or {})
        if trained:
            parts.append(f"<p class=desc>Trained here: {_e(trained)}.</p>")
        parts.append(_training_curves(evs, label))
        method_curves = [(column.split("/", 1)[1], curves.get((m, column))) for column in columns if (m, column) in first]
        method_curves = [(n, c) for n, c in method_curves if c and c["recall"]]
        for column in columns:
            ev = first.get((m, column))
            if ev is None:
                continue
            pictures = _examples(ev, examples, cache, device)
            parts.append(f"<h3>{_e(column.split('/', 1)[1])} <small class=pm>· {_e(_run_label(ev.run))}</small></h3>")
            if pictures:
                parts.append("<div class=strip>" + "".join(
                    f"<figure>{_img(png, caption)}<figcaption>{_e(caption)}. Panels: input, reconstruction, "
                    f"post-processed anomaly map, thresholded map ({_e(ev.default_rule)}, small components removed), "
                    f"ground truth.</figcaption></figure>" for caption, png in pictures) + "</div>")
            else:
                parts.append("<p class=empty>No example pictures (no maps and no evaluation figures).</p>")
        if len(method_curves) > 1 and len(methods) > 1:
            parts.append(f"<div class=plots><figure>{_img(pr_figure(method_curves, label), 'precision-recall ' + label)}"
                         "<figcaption>Pooled precision–recall on each test set.</figcaption></figure></div>")
        runs_seen = {}
        for ev in evs:
            runs_seen.setdefault(ev.run, []).append(ev)
        for run, run_evs in runs_seen.items():
            parts.append(_json_details(f"Configuration of {_run_label(run)} ({', '.join(e.test_set for e in run_evs)})",
                                       [_run_config(e) for e in run_evs]))
        parts.append("</section>")

    if table:
        parts.append(_seconds(table))
    parts.append('<h2 id="protocol">Protocol</h2>')
    parts.append("<p class=note>The evaluation settings every number above was computed with (from metrics.json).</p>")
    parts.append(_json_details("Post-processing, thresholds, metrics", evals[0].metrics.get("protocol")))
    if table:
        parts.append(_json_details("Table statistics", table.get("statistics")))
    parts.append(f"<footer>Written by mddpm {_e(__version__)} (mddpm.viz.report). Self-contained: styles and images "
                 "are embedded; nothing is fetched.</footer>")

    doc = ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
           '<meta name=viewport content="width=device-width,initial-scale=1">'
           f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
           + "\n".join(parts) + "</main></body></html>\n")
    out = Path(out_html)
    with atomic_write(out) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    return out
