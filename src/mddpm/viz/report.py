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

import datetime as _dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mddpm import __version__
from mddpm.errors import MddpmError
from mddpm.io import atomic_write, read_json, write_json
from mddpm.registry import all_methods
from mddpm.viz.lesion_scale import lesion_scale
from mddpm.viz.png import img_tag
from mddpm.viz.pr_curves import pooled_pr_curve, pr_figure
from mddpm.viz.report_style import CSS
from mddpm.viz.report_tables import (
    esc, every_metric_table, json_details, published_table, seconds_table, summary_table, table1)
from mddpm.viz.training_curves import read_losses, training_curve_figure

EXAMPLES = 3


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
        curve = pooled_pr_curve(maps, device, ev.metrics["protocol"].get("postprocess"))
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
    from mddpm.evaluation.postprocess import postprocess_map, remove_small_components, stored_constants
    from mddpm.viz.cases import render_case_figure

    maps_dir = Path(ev.metrics["test"]["maps"])
    if not (maps_dir / "predict.json").is_file() or n == 0:
        return None
    try:
        maps = open_maps(maps_dir, "test")
        threshold = ev.metrics["thresholds"][ev.default_rule]["threshold"]
        erosion, kernel, max_size = stored_constants(ev.metrics["protocol"].get("postprocess"))
        out = []
        with torch.inference_mode():
            for cid, caption in _example_cases(ev, n):
                score, mask, label = maps.load(cid, torch.device(device))
                score = postprocess_map(score, mask, erosion_iterations=erosion, median_kernel=kernel)
                pred = remove_small_components(binarise(score, threshold), max_size=max_size)
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


# ---- HTML pieces ---------------------------------------------------------------------------------


def _run_config(ev: _Eval) -> dict:
    m = ev.metrics
    return {"config": m.get("config"), "predict_settings": m.get("predict_settings"), "run": m.get("run"),
            "test": m.get("test"), "val": m.get("val"), "healthy_val": m.get("healthy_val"),
            "thresholds": {r: {k: v for k, v in t.items() if k != "steps"} for r, t in m.get("thresholds", {}).items()},
            "evaluation": str(ev.path)}


def _training_summary(config: dict) -> str:
    """"preset demo, 800 steps of batch 16 (the preset: ...)" from a run's resolved config, with the
    registered preset's description ('' when it has no training)."""
    train = config.get("train") or {}
    if not train.get("max_steps"):
        return ""
    summary = f"preset {config.get('preset', '?')}, {train['max_steps']:,} steps of batch {train.get('batch_size', '?')}"
    spec = all_methods().get(config.get("method"))
    about = spec.presets.get(config.get("preset"), {}).get("about") if spec else None
    return f"{summary} (the preset: {about})" if about else summary


def _lesion_scales(evals: list[_Eval]) -> str:
    """One line per test set: its lesion sizes against the post-processing's ('' without prepared caches)."""
    first = {}
    for ev in evals:
        first.setdefault(ev.column, ev)
    lines = [f"<li><b>{esc(column)}</b>: {esc(scale.sentence())}</li>"
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
    return (f"<div class=plots><figure>{img_tag(training_curve_figure(shown, f'{label}: training'), 'training ' + label)}"
            "<figcaption>Loss against the optimiser step: training (thin line) and validation (dots) of each run, "
            "from RUN/logs/csv/metrics.csv.</figcaption></figure></div>")


def _method_description(method: str) -> str:
    from mddpm.registry import all_methods

    spec = all_methods().get(method)
    return spec.description if spec else ""


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

    parts = [f"<header><h1>{esc(title)}</h1>",
             f"<div class=meta>mddpm {esc(__version__)} · {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} · "
             f"{len(methods)} method{'s' * (len(methods) != 1)} · {len(columns)} test set{'s' * (len(columns) != 1)} · "
             f"{len(evals)} evaluation{'s' * (len(evals) != 1)}</div>"]
    if table and table.get("grid", {}).get("description"):
        parts.append(f"<p class=lead>{esc(table['grid']['description'])}</p>")
    nav = ['<a href="#results">Results</a>', '<a href="#pr">Precision–recall</a>']
    nav += [f'<a href="#{_anchor(m)}">{esc(labels.get(m, m))}</a>' for m in methods]
    if table and table.get("seconds"):
        nav.append('<a href="#time">Time</a>')
    nav.append('<a href="#protocol">Protocol</a>')
    parts.append(f"<nav>{''.join(nav)}</nav></header>")

    parts.append('<h2 id="results">Results</h2>')
    if table:
        parts += [table1(table), "<h3>Every metric and threshold rule</h3>", every_metric_table(table), published_table(table)]
        if len(evals) > len(first):
            parts.append(f"<details><summary>Each of the {len(evals)} evaluations (over volumes)</summary>"
                         f"{summary_table(evals)}</details>")
    else:
        parts.append(summary_table(evals))
    parts.append(_lesion_scales(evals))

    parts.append('<h2 id="pr">Precision–recall</h2>')
    dashed = {labels.get(r["method"], r["method"]) for r in (table or {}).get("rows", []) if r["extra"]}
    figures = []
    for column in columns:
        lines = [(labels.get(m, m), curves.get((m, column))) for m in methods if (m, column) in first]
        shown = [(name, c) for name, c in lines if c and c["recall"]]
        if shown:
            n_vol = shown[0][1].get("volumes")
            figures.append(f"<figure>{img_tag(pr_figure(shown, column.split('/', 1)[1], dashed), 'precision-recall ' + column)}"
                           f"<figcaption>{esc(column)}: pooled over all voxels of the {n_vol} post-processed test maps"
                           f"{' (first run of each method)' if table else ''}.</figcaption></figure>")
    parts.append(f"<div class=plots>{''.join(figures)}</div>" if figures else
                 "<p class=empty>No curves: the maps folders named in metrics.json are not available.</p>")
    parts.append("<p class=note>Pooled AP (all voxels of all test volumes together) differs from the table's AUPRC, "
                 "which is the mean of per-volume average precisions.</p>")

    for m in methods:
        evs = [ev for ev in evals if ev.method == m]
        label = labels.get(m, m)
        parts.append(f'<section class=method><h2 id="{_anchor(m)}">{esc(label)}</h2>')
        desc = _method_description(m)
        if desc:
            parts.append(f"<p class=desc><code>{esc(m)}</code> · {esc(desc)}</p>")
        trained = _training_summary(evs[0].metrics.get("config") or {})
        if trained:
            parts.append(f"<p class=desc>Trained here: {esc(trained)}.</p>")
        parts.append(_training_curves(evs, label))
        method_curves = [(column.split("/", 1)[1], curves.get((m, column))) for column in columns if (m, column) in first]
        method_curves = [(n, c) for n, c in method_curves if c and c["recall"]]
        for column in columns:
            ev = first.get((m, column))
            if ev is None:
                continue
            pictures = _examples(ev, examples, cache, device)
            parts.append(f"<h3>{esc(column.split('/', 1)[1])} <small class=pm>· {esc(_run_label(ev.run))}</small></h3>")
            if pictures:
                parts.append("<div class=strip>" + "".join(
                    f"<figure>{img_tag(png, caption)}<figcaption>{esc(caption)}. Panels: input, reconstruction, "
                    f"post-processed anomaly map, thresholded map ({esc(ev.default_rule)}, small components removed), "
                    f"ground truth.</figcaption></figure>" for caption, png in pictures) + "</div>")
            else:
                parts.append("<p class=empty>No example pictures (no maps and no evaluation figures).</p>")
        if len(method_curves) > 1 and len(methods) > 1:
            parts.append(f"<div class=plots><figure>{img_tag(pr_figure(method_curves, label), 'precision-recall ' + label)}"
                         "<figcaption>Pooled precision–recall on each test set.</figcaption></figure></div>")
        runs_seen = {}
        for ev in evs:
            runs_seen.setdefault(ev.run, []).append(ev)
        for run, run_evs in runs_seen.items():
            parts.append(json_details(f"Configuration of {_run_label(run)} ({', '.join(e.test_set for e in run_evs)})",
                                       [_run_config(e) for e in run_evs]))
        parts.append("</section>")

    if table:
        parts.append(seconds_table(table))
    parts.append('<h2 id="protocol">Protocol</h2>')
    parts.append("<p class=note>The evaluation settings every number above was computed with (from metrics.json).</p>")
    parts.append(json_details("Post-processing, thresholds, metrics", evals[0].metrics.get("protocol")))
    if table:
        parts.append(json_details("Table statistics", table.get("statistics")))
    parts.append(f"<footer>Written by mddpm {esc(__version__)} (mddpm.viz.report). Self-contained: styles and images "
                 "are embedded; nothing is fetched.</footer>")

    doc = ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
           '<meta name=viewport content="width=device-width,initial-scale=1">'
           f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
           + "\n".join(parts) + "</main></body></html>\n")
    out = Path(out_html)
    with atomic_write(out) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    return out
