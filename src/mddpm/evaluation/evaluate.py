"""``mddpm evaluate``: score predicted anomaly maps with the published protocol (protocol §5).

Inputs are maps folders written by ``mddpm predict`` (``<case>.nii.gz`` [H, W, Z] on the
prepared grid, ``recon/<case>.nii.gz``, ``predict.json`` naming the prepared cache, whose masks,
labels and input images are used). Per test volume, streamed one at a time:

1. post-process the map (brain mask eroded per axial slice, multiplied, 3-D 5³ median);
2. AUPRC and AUROC over all voxels (ground truth = label > 0);
3. the per-volume ORACLE best Dice (bisection on the volume's own labels, published
   ``BestDicePerVol``; with the exact rule also its exact counterpart);
4. for every threshold rule: binarise ``A > τ``, remove components of ≤ 7 voxels
   (26-connected), count TP/FP/FN/TN and derive Dice, precision, recall, ...

τ comes from the lesion validation maps: their post-processed maps and labels are pooled
(before component filtering) and searched by the published bisection (always, the default rule)
and, when asked, exactly. With healthy validation maps, thresholds at 1/5/10 % voxel FPR on their
in-brain voxels are reported too. Aggregates are ``nanmean`` ± population ``nanstd`` over
volumes, plus pooled (voxel-level) values over the whole split.

Outputs in ``out``: ``metrics.json``, ``metrics.csv``, ``metrics.md``, ``threshold.json`` and, as asked for,
``figures/<case>.png`` (the first cases), ``examples/`` (best, median and worst case; ``examples.json`` lists
them), ``pr.json`` (the pooled precision-recall curve of the post-processed test maps) and
``segmentations/<case>.nii.gz`` in each scan's own geometry (:mod:`mddpm.evaluation.segmentations`);
all are written at the end, each atomically.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from nibabel.affines import voxel_sizes

from mddpm._version import __version__
from mddpm.device import resolve_device
from mddpm.errors import MddpmError
from mddpm.evaluation.examples import draw_examples
from mddpm.evaluation.maps import MapsFolder, open_maps
from mddpm.evaluation.metrics import (
    COUNT_NAMES,
    RATIO_NAMES,
    PooledScores,
    RankedScores,
    auroc,
    average_precision,
    confusion_counts,
    mean_std,
    ratios,
)
from mddpm.evaluation.metrics_files import ORACLE_NOTE, csv_text, finite_or_none, fmt, markdown
from mddpm.evaluation.postprocess import PostprocessSettings, cpu_threads
from mddpm.evaluation.pr_curve import pooled_pr_curve
from mddpm.evaluation.segmentations import source_dataset, write_native_segmentation
from mddpm.evaluation.threshold import (
    BISECTION_STEPS,
    FPR_RATES,
    ThresholdResult,
    bisection_search,
    exact_search,
    fpr_search,
    pooled_dice,
)
from mddpm.evaluation.threshold_file import threshold_record
from mddpm.folder_lock import writes_folder
from mddpm.io import all_or_nothing, atomic_write, case_file, check_output_folder, clear_outputs, read_json, write_json
from mddpm.messages import note
from mddpm.parallel import threaded_map, usable_threads
from mddpm.progress import track as progress_track

RULES = ("bisection", "exact")
DEFAULT_RULE = "bisection"
CASE_METRICS = ("auprc", "auroc")
# and one figure, example and segmentation per case
OUTPUT_FILES = ("metrics.json", "metrics.csv", "metrics.md", "threshold.json", "pr.json",
                "logs/tb/events.out.tfevents.*")  # a tracker's (``track``)


def _own_files(out: Path, case_ids: list[str]) -> list[str]:
    """What evaluate writes into ``out`` for ``case_ids`` and, per the cases of an earlier ``metrics.json``, wrote
    there (``--force`` replaces those, and refuses any other file: another name, a folder of one's own)."""
    ids = set(case_ids)
    with contextlib.suppress(MddpmError):
        earlier = read_json(out / "metrics.json").get("cases") if (out / "metrics.json").is_file() else []
        ids |= {str(c.get("case_id")) for c in (earlier if isinstance(earlier, list) else []) if isinstance(c, dict)}
    names = [glob.escape(c) for c in sorted(ids)]
    return [*OUTPUT_FILES, "examples/examples.json", *(f"{folder}/{c}.png" for folder in ("figures", "examples")
                                                       for c in names), *(f"segmentations/{c}.nii.gz" for c in names)]


def _refuse_test_cases(test: MapsFolder, other: MapsFolder | None) -> None:
    """A threshold chosen on maps of test cases (the test folder itself, or a copy) is refused."""
    if other is None or other.meta.get("dataset") != test.meta.get("dataset"):
        return
    shared = sorted(set(test.case_ids) & set(other.case_ids))
    if shared:
        raise MddpmError(f"{other.folder}: holds {len(shared)} case(s) of the test maps {test.folder} (e.g. "
                         f"{shared[0]}); "
                         "a threshold must be chosen on other cases")


def grid_spacing_mm(maps: MapsFolder) -> float:
    """The model grid's voxel size in mm (geometric mean of the first volume's three edges)."""
    return float(np.prod(voxel_sizes(maps.prepared.affines[0])) ** (1 / 3))


def _protocol(postprocess: dict, rules: list[str], fpr_rates: tuple[float, ...] | None) -> dict:
    return {
        "postprocess": postprocess,
        "threshold": {"rules": rules, "default": DEFAULT_RULE, "chosen_on": "lesion validation maps, pooled voxels, "
                      "post-processed, before component removal", "objective": "pooled voxel Dice",
                      "bisection_steps": BISECTION_STEPS, "binarise": "A > threshold (compared in float32)",
                      "fpr_rates": list(fpr_rates) if fpr_rates else None,
                      "fpr_pool": "in-brain voxels (mask > 0) of the healthy validation maps" if fpr_rates else None},
        "threshold_free": "AUPRC = average precision (step-wise), AUROC (trapezoidal); all voxels; "
                          "ground truth = label > 0",
        "oracle": ORACLE_NOTE,
        "aggregate": "nanmean and population nanstd over volumes; pooled = from summed voxel counts",
        "conventions": {"dice_both_empty": "NaN (skipped by nanmean), as published",
                        "precision_nothing_predicted": "0, as published (scikit-learn default)",
                        "other_ratios_zero_denominator": "NaN",
                        "fpr": "FP / (FP + TN); the published 'FPR' is FP / (FP + TP), reported here as fdr",
                        "auprc_auroc_without_lesion": "NaN"},
    }


def _processed(maps: MapsFolder, device: torch.device, scoring: PostprocessSettings, progress: bool,
               what: str) -> Iterator[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(case id, post-processed map [Z, H, W], brain mask, label) of every case, in order. On the CPU
    several volumes are read and post-processed at once, one thread each (decompression and the
    compiled median release the GIL): :func:`mddpm.parallel.usable_threads` volumes at a time."""
    def one(cid: str):
        score, mask, label = maps.load(cid, device)
        return cid, scoring.postprocess(score, mask, threads=1), mask, label

    threads = usable_threads() if device.type == "cpu" else 1
    return threaded_map(one, progress_track(maps.case_ids, f"evaluate: {what}", progress), threads)


def _pool_val(maps: MapsFolder, device: torch.device, log: Callable[[str], None], scoring: PostprocessSettings,
              progress: bool) -> PooledScores:
    """Post-process every lesion validation map and pool all their voxels (unsorted: the bisection
    needs only counts; the exact rule ranks the pool).

    Each volume is reduced to its voxels above its minimum as it streams past, straight into the
    pool (the published code concatenated the flat maps with repeated ``np.append``)."""
    pairs = ((score, label) for _, score, _, label in _processed(maps, device, scoring, progress, "threshold maps"))
    pooled = PooledScores.collect(pairs, len(maps.case_ids) * int(np.prod(maps.prepared.masks.shape[1:])))
    if pooled.n_positive == 0:
        raise MddpmError(f"{maps.folder}: the validation split {maps.split!r} has no lesion voxels; "
                         f"a threshold needs a lesion validation split")
    log(f"val: pooled {len(maps.case_ids)} volumes of split {maps.split!r}")
    return pooled


def _pool_healthy(maps: MapsFolder, device: torch.device, scoring: PostprocessSettings, progress: bool) -> RankedScores:
    """The in-brain voxels of every post-processed healthy map, ranked together."""
    parts = []
    for _, score, mask, _ in _processed(maps, device, scoring, progress, "healthy maps"):
        inside = score[mask]
        if inside.numel():
            parts.append(RankedScores.from_scores(inside, torch.zeros_like(inside, dtype=torch.bool)))
    if not parts:
        raise MddpmError(f"{maps.folder}: the healthy maps have no in-brain voxels (empty brain masks)")
    return RankedScores.pool(parts)


def _case_metrics(score: torch.Tensor, label: torch.Tensor, thresholds: dict[str, ThresholdResult],
                  exact_oracle: bool, scoring: PostprocessSettings
                  ) -> tuple[dict, dict[str, torch.Tensor], RankedScores]:
    """Metrics of one post-processed map; also the filtered predictions per rule and the map's ranking."""
    ranked = RankedScores.from_scores(score, label)
    oracle = bisection_search(ranked)
    row = {"lesion_voxels": ranked.n_positive, "auprc": average_precision(ranked), "auroc": auroc(ranked),
           "oracle_dice_bisection": oracle.dice, "oracle_threshold_bisection": oracle.threshold}
    if exact_oracle:
        best = exact_search(ranked)
        row.update(oracle_dice_exact=best.dice, oracle_threshold_exact=best.threshold)
    predictions, per_rule = {}, {}
    for rule, result in thresholds.items():
        pred = scoring.segment(score, result.threshold)
        counts = confusion_counts(pred, label)
        per_rule[rule] = {**counts, **ratios(**counts)}
        predictions[rule] = pred
    row["rules"] = per_rule
    return row, predictions, ranked


def _aggregate(rows: list[dict], rules: list[str], exact_oracle: bool) -> dict:
    keys = list(CASE_METRICS) + ["oracle_dice_bisection"] + (["oracle_dice_exact"] if exact_oracle else [])
    agg = {k: mean_std(r[k] for r in rows) for k in keys}
    agg["rules"] = {rule: {m: mean_std(r["rules"][rule][m] for r in rows) for m in RATIO_NAMES + COUNT_NAMES}
                    for rule in rules}
    return agg


def _pooled(rows: list[dict], rules: list[str]) -> dict:
    out = {}
    for rule in rules:
        counts = {c: int(sum(r["rules"][rule][c] for r in rows)) for c in COUNT_NAMES}
        out[rule] = {**counts, **ratios(**counts)}
    return out


@writes_folder("out", inputs=("test_maps", "val_maps", "healthy_val"))
def evaluate(test_maps: str | Path, val_maps: str | Path, out: str | Path, rules: list[str] | None = None,
             healthy_val: str | Path | None = None, figures: int = 0, examples: int = 0, pr_curve: bool = False,
             device: str = "cpu",
             force: bool = False, log: Callable[[str], None] | None = None, postprocess: str = "published",
             progress: bool = True, write_segmentations: bool = False, draw_case: Callable[..., bytes] | None = None,
             track: Callable[[dict, Path], list[str]] | None = None) -> dict:
    """Run the protocol on ``test_maps`` with thresholds from ``val_maps``; write the outputs to ``out``.

    ``rules``: threshold rules to report besides the default ``"bisection"`` (e.g. ``["exact"]``);
    the default is always computed and listed first. ``healthy_val``: maps of healthy volumes for
    FPR-based thresholds. ``figures``: number of test cases drawn by ``draw_case(image, reconstruction,
    anomaly_map, prediction, label, title=...) -> PNG bytes`` (arrays [Z, H, W]; callers pass
    :func:`mddpm.viz.cases.render_case_figure`: evaluation draws nothing itself); ``examples``: at most this
    many of the best, median and worst cases (:mod:`mddpm.evaluation.examples`), drawn alike. ``pr_curve``: also
    ``pr.json``, the pooled precision-recall curve (it holds the test split's ranked in-brain scores: about
    6 MB per 96×96×50 volume at its peak). ``postprocess``:
    ``"published"`` (voxel constants as published) or ``"physical"`` (the same sizes in mm; see
    :meth:`~mddpm.evaluation.postprocess.PostprocessSettings.for_grid`). ``progress``: bars on a terminal.
    ``write_segmentations``: also each test case's default-rule segmentation on its scan's grid. ``track(report,
    out)``: sends the metrics to experiment trackers (:func:`mddpm.training.loggers.log_evaluation`) and returns
    where, one line each (logged). Returns the metrics dict written to ``metrics.json``.
    """
    log = log or note
    rules = [DEFAULT_RULE] + [r for r in dict.fromkeys(rules or []) if r != DEFAULT_RULE]
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        raise MddpmError(f"unknown threshold rule(s) {unknown} (known: {', '.join(RULES)})")
    if figures < 0:
        raise MddpmError(f"--figures must be >= 0, got {figures}")
    if examples < 0:
        raise MddpmError(f"--examples must be >= 0, got {examples}")
    if (figures or examples) and draw_case is None:
        raise ValueError("figures and examples need a draw_case function")
    dev = resolve_device(device)
    out = Path(out)
    test = open_maps(test_maps, "test")
    earlier = check_output_folder(out, force, _own_files(out, test.case_ids))
    val = open_maps(val_maps, "validation")
    healthy = open_maps(healthy_val, "healthy validation") if healthy_val is not None else None
    for other in (val, healthy):
        _refuse_test_cases(test, other)
    scans = source_dataset(test.meta, test.folder) if write_segmentations else None
    grids = {m.folder: tuple(m.prepared.masks.shape[1:]) for m in (test, val, healthy) if m is not None}
    if len(set(grids.values())) != 1:
        shapes = ", ".join(f"{k}: {v}" for k, v in grids.items())
        raise MddpmError(f"{test.folder}: the maps folders are on different grids ({shapes})")

    spacing = grid_spacing_mm(test)
    try:
        scoring = PostprocessSettings.for_grid(postprocess, spacing, int(test.prepared.masks.shape[-1]))
    except ValueError as e:
        raise MddpmError(f"--postprocess {postprocess}: {e}") from None

    if val.meta.get("run") != test.meta.get("run"):
        log(f"warning: test maps come from run {test.meta.get('run')} but the threshold is chosen on maps of run "
            f"{val.meta.get('run')}")

    with torch.inference_mode(), cpu_threads() if dev.type == "cpu" else contextlib.nullcontext():
        val_pool = _pool_val(val, dev, log, scoring, progress)
        thresholds = {"bisection": bisection_search(val_pool)}
        if "exact" in rules:
            thresholds["exact"] = exact_search(val_pool)
        if healthy is not None:
            for result in fpr_search(_pool_healthy(healthy, dev, scoring, progress), FPR_RATES):
                result.dice = pooled_dice(val_pool, result.threshold)
                thresholds[result.rule] = result
                rules.append(result.rule)
        del val_pool
        for rule in rules:
            log(f"threshold {rule}: {thresholds[rule].threshold:.6g} (val pooled Dice {fmt(thresholds[rule].dice)})")

        rows, pictures, segmentations, ranked = [], {}, {}, []
        for i, (cid, score, _, label) in enumerate(_processed(test, dev, scoring, progress, "test maps")):
            row, predictions, ranking = _case_metrics(score, label, {r: thresholds[r] for r in rules}, "exact" in rules,
                                                      scoring)
            rows.append({"case_id": cid, **row})
            if pr_curve:
                ranked.append(ranking)
            if scans is not None:
                segmentations[cid] = predictions[DEFAULT_RULE].cpu().numpy()  # [Z, H, W] bool, model grid
            if i < figures:
                image = np.asarray(test.prepared.volume(cid)[0])
                title = f"{cid}: Dice {fmt(row['rules'][DEFAULT_RULE]['dice'], 3)} ({DEFAULT_RULE})"
                pictures[cid] = draw_case(
                    image, test.reconstruction(cid), score.cpu().numpy(), predictions[DEFAULT_RULE].cpu().numpy(),
                    label.cpu().numpy(), title=title)
        log(f"test: {len(rows)} volumes of split {test.split!r} scored")
        curve = pooled_pr_curve(ranked) if pr_curve else None
        del ranked
        examples = draw_examples(test, rows, DEFAULT_RULE, thresholds[DEFAULT_RULE].threshold, scoring, draw_case, dev,
                                 examples) if examples and draw_case is not None else []

    exact_oracle = "exact" in rules
    report = {
        "format": "mddpm-metrics", "format_version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mddpm_version": __version__,
        "test": test.describe(), "val": val.describe(), "healthy_val": healthy.describe() if healthy else None,
        "protocol": _protocol(scoring.to_json(), rules, FPR_RATES if healthy else None),
        "default_rule": DEFAULT_RULE,
        "thresholds": {rule: thresholds[rule].to_json() for rule in rules},
        "aggregate": _aggregate(rows, rules, exact_oracle),
        "pooled": _pooled(rows, rules),
        "cases": rows,
        "run": test.meta.get("run"), "config": test.meta.get("config"), "predict_settings": test.meta.get("settings"),
    }
    report = finite_or_none(report)
    clear_outputs(out, earlier)
    with all_or_nothing(out):  # metrics, figures and segmentations, or none of them
        write_json(out / "metrics.json", report)
        with atomic_write(out / "metrics.csv") as tmp:
            tmp.write_text(csv_text(rows, rules))
        with atomic_write(out / "metrics.md") as tmp:
            tmp.write_text(markdown(report))
        if curve is not None:
            write_json(out / "pr.json", curve)
        write_json(out / "threshold.json",
                   threshold_record(thresholds[DEFAULT_RULE].threshold, DEFAULT_RULE, val.split, scoring))
        if examples:
            write_json(out / "examples" / "examples.json",
                       {"rule": DEFAULT_RULE, "examples": [{"case_id": cid, "caption": caption, "file": f"{cid}.png"}
                                                           for cid, caption, _ in examples]})
        for cid, _, png in examples:
            with atomic_write(case_file(out, cid, ".png", "examples")) as tmp:
                tmp.write_bytes(png)
        for cid, png in pictures.items():
            with atomic_write(case_file(out, cid, ".png", "figures")) as tmp:
                tmp.write_bytes(png)
        for cid, segmentation in progress_track(list(segmentations.items()), "evaluate: segmentations", progress):
            write_native_segmentation(out, scans, test.prepared, cid, segmentation)
    for line in track(report, out) if track is not None else []:
        log(f"metrics sent to {line}")
    return report
