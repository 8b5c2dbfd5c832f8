"""The one-command demo: synthetic brains -> train -> predict -> evaluate -> report, as a benchmark of
one method and one run (:mod:`mddpm.benchmark`), plus a preview picture of the data.

Everything runs on the CPU of a laptop in minutes (and uses a GPU when there is one). The demo writes
its experiment to ``OUT/experiment.json`` (``mddpm benchmark OUT/experiment.json --out OUT`` reruns or
resumes it) and then the benchmark's folder layout::

    experiment.json                          what runs: one method, one seed, tumour and MS test sets
    data/synthetic/                          the synthetic dataset (mddpm format) and its prepared cache
    preview.png                              a montage of synthetic cases with their lesion outlines
    runs/synthetic/<method>/seed<S>/train/   the trained model (config.json, best.pt, logs; threshold.json
                                             for `mddpm detect`)
    runs/synthetic/<method>/seed<S>/maps/    anomaly maps of the validation and test splits
    runs/synthetic/<method>/seed<S>/eval/    metrics.json/.csv/.md, figures, threshold.json per lesion type
    table.md, report.html                    everything above in one table and one page
"""

from __future__ import annotations

import time
from pathlib import Path

from mddpm.config import as_overrides
from mddpm.data.synth.sizes import DEMO_FAMILY, FAMILY_NAMES
from mddpm.errors import MddpmError
from mddpm.folder_lock import writes_folder
from mddpm.io import check_output_folder, clear_outputs, read_json, write_json
from mddpm.messages import say

LESION_SETS = ("tumour", "ms")
TRAIN_SEED = 3141  # the published seed (the config's default)
FIGURES = 4  # case figures per test set
# cache/: the report's picture cache written by 0.1.0 (the report now shows what evaluate stored)
OWN_FILES = ("experiment.json", "preview.png", "report.html", "benchmark.json", "table.json", "table.md", "table.csv",
             "cache/**", "runs/**")


def other_family(family: str) -> str:
    """The generator family the demo tests out of family: the one it did not train on."""
    return next(f for f in FAMILY_NAMES if f != family)


def demo_experiment(method: str, size: str, seed: int, overrides=(), family: str = DEMO_FAMILY) -> dict:
    """The demo's experiment: ``method`` at preset demo on a generated synthetic dataset of ``size``
    (synthesis ``seed``, generator ``family``), one training run (seed 3141, or the ``train.seed`` of
    ``overrides``); test sets: tumour and MS-like lesions of ``family``, and tumours of the other family
    (out of family: anatomy and contrast that training never saw)."""
    settings = as_overrides(overrides)
    train_seed = settings.pop("train.seed", TRAIN_SEED)
    if isinstance(train_seed, bool) or not isinstance(train_seed, int):
        raise MddpmError(f"--set train.seed={train_seed}: expected an integer")
    other = other_family(family)
    return {
        "name": "demo", "title": f"mddpm demo: {method} on synthetic brains", "preset": "demo",
        "description": f"{method} (preset demo) trained on synthetic brains of the {family} family built from the "
                       "MNI152 anatomy, scored under the published protocol on tumour-like and MS-like test scans of "
                       f"that family and, as {other}-tumour, on tumours in brains of the {other} family, which "
                       "training never saw (other anatomy, contrast and acquisition). The synthetic results are not "
                       "a promise for real scans: benchmarks/results/generalisation.md measures how much of the "
                       "out-of-family drop is the other family's difficulty and how much is never having seen it.",
        "datasets": [{"name": "synthetic", "path": None,
                      "synth": {"size": size, "seed": seed, "family": family, "test_families": [other]},
                      "healthy_val": "val",
                      "test_sets": [{"name": s, "test": f"{s}_test", "val": f"{s}_val"} for s in LESION_SETS]
                      + [{"name": f"{other}-tumour", "test": f"{other}_tumour_test", "val": f"{other}_tumour_val"}]}],
        "methods": [method], "runs": {"seeds": [train_seed]},
        "overrides": {method: settings},
        "thresholds": ["bisection", "exact"], "figures": FIGURES,
    }


@writes_folder("out")
def run_demo(out: str | Path, method: str = "mddpm-fpmcm", size: str = "demo", seed: int = 0,
             overrides=(), force: bool = False, progress: bool = True, log=say, family: str = DEMO_FAMILY) -> dict:
    """Run the demo into ``out``; returns {"seconds": {step: s}, "evaluations": {lesion set: metrics},
    "out", "run"}. ``progress``: bars on a terminal."""
    from mddpm.benchmark.experiment import load_experiment
    from mddpm.benchmark.plan import RunPaths
    from mddpm.benchmark.runner import resolve_datasets, run_benchmark
    from mddpm.data.synth.build import OUTPUT_FILES as DATA_FILES
    from mddpm.data.verify import verify_dataset
    from mddpm.evaluation.threshold_file import publish_threshold
    from mddpm.run_folder import RunFolder
    from mddpm.viz.montage import preview_montage

    out = Path(out).resolve()
    clear_outputs(out, check_output_folder(out, force, [*OWN_FILES, *(f"data/synthetic/{p}" for p in DATA_FILES)]))
    write_json(out / "experiment.json", demo_experiment(method, size, seed, overrides, family))
    experiment = load_experiment(out / "experiment.json")  # every setting checked before anything runs
    times: dict[str, float] = {}

    start = time.perf_counter()
    log(f"[1/3] synthesising brains ({size} size, {family} family; tumours of the {other_family(family)} family "
        "for an out-of-family test) from the MNI152 anatomy in nilearn; a preview")
    data = resolve_datasets(experiment, {}, out, out / "experiment.json", progress=progress)["synthetic"]
    errors = [p for p in verify_dataset(data) if p.severity == "error"]
    if errors:
        raise MddpmError(f"{data}: synthetic dataset failed verification: {errors[0]}")
    preview_montage(data, out / "preview.png")
    times["data"] = time.perf_counter() - start

    log(f"[2/3] train {method} (demo preset), predict, evaluate (published protocol; exact threshold beside it)")
    start = time.perf_counter()
    result = run_benchmark(out / "experiment.json", out=out, progress=progress, log=lambda m: None)
    for row in result["stages"]:
        kind = row["stage"].split("/")[0]
        times[kind] = times.get(kind, 0.0) + (row["seconds"] or 0.0)
    times["table and report"] = time.perf_counter() - start - sum(times[k] for k in ("train", "predict", "evaluate"))

    log("[3/3] the report: report.html; the tumour threshold goes to the run folder for `mddpm detect`")
    cell = RunPaths.of(out, "synthetic", method, experiment.runs[0].tag)
    run = RunFolder(cell.train)
    tumour = experiment.datasets[0].test_sets[0]  # LESION_SETS[0]
    publish_threshold(cell.eval(tumour), run.root)
    evaluations = {t.name: read_json(cell.eval(t) / "metrics.json") for t in experiment.datasets[0].test_sets}
    return {"seconds": times, "evaluations": evaluations, "out": out, "run": run.root}
