"""The one-command demo: synthetic brains -> prepare -> train -> predict -> evaluate -> report.

Everything runs on the CPU of a laptop in minutes (and uses a GPU when there is one). The output
folder holds, in the order they are made::

    data/                 the synthetic dataset (mddpm format) and its prepared cache
    preview.png           a montage of synthetic cases with their lesion outlines
    run/                  the trained model (config.json, best.pt, logs; threshold.json for `mddpm detect`)
    maps/<split>/         anomaly maps of the validation and test splits
    eval/<set>/           metrics.json/.csv/.md, figures, threshold.json per lesion type
    report.html           everything above in one page
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from mddpm.errors import MddpmError
from mddpm.io import check_output_folder, clear_outputs

LESION_SETS = ("tumour", "ms")


def run_demo(out: str | Path, method: str = "mddpm-fpmcm", size: str = "demo", seed: int = 0,
             overrides=(), force: bool = False, progress: bool = True, log=print) -> dict:
    """Run the demo into ``out``; returns {stage: seconds} and the evaluation summaries.
    ``progress``: bars on a terminal."""
    from mddpm.data.prepare import prepare_dataset
    from mddpm.data.synth import OUTPUT_FILES as DATA_FILES, synthesize
    from mddpm.data.synth_sizes import SIZES
    from mddpm.data.verify import verify_dataset
    from mddpm.evaluation.evaluate import OUTPUT_FILES as EVAL_FILES, evaluate
    from mddpm.inference.predict import predict
    from mddpm.training.train import RUN_FILES, train
    from mddpm.viz.montage import preview_montage
    from mddpm.viz.report import write_report

    out = Path(out).resolve()
    own = ["preview.png", "report.html", "maps/*.nii.gz", "maps/*/predict.json", "maps/*/predict.started.json",
           *(f"data/{p}" for p in DATA_FILES),
           *(f"run/{p}" for p in RUN_FILES), *(f"eval/*/{p}" for p in EVAL_FILES)]
    clear_outputs(out, check_output_folder(out, force, own))
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    def stage(name: str, what: str):
        log(f"[{len(times) + 1}/7] {what}")
        return _Timer(times, name)

    with stage("synth", f"synthesising brains ({size} size) from the MNI152 anatomy in nilearn"):
        counts = dict(SIZES[size])
        data = synthesize(out / "data", **counts, seed=seed, workers=2, progress=progress)
    with stage("verify", "verifying the dataset"):
        errors = [p for p in verify_dataset(data) if p.severity == "error"]
        if errors:
            raise MddpmError(f"{data}: synthetic dataset failed verification: {errors[0]}")
    with stage("prepare", "preparing the model grid and a preview picture"):
        prepare_dataset(data, "demo", progress=progress)
        preview_montage(data, out / "preview.png")
    with stage("train", f"training {method} (demo preset)"):
        run = train(data, method, "demo", out / "run", overrides=overrides, progress=progress)
    with stage("predict", "predicting anomaly maps"):
        splits = ["val"] + [f"{s}_{part}" for s in LESION_SETS for part in ("val", "test")]
        for split in splits:
            predict(run, data, split, out / "maps" / split, progress=progress)
    with stage("evaluate", "evaluating (published protocol; exact threshold beside it)"):
        summaries = {}
        for s in LESION_SETS:
            summaries[s] = evaluate(out / "maps" / f"{s}_test", out / "maps" / f"{s}_val", out / "eval" / s,
                                    rules=["exact"], healthy_val=out / "maps" / "val", figures=4, log=lambda m: None,
                                    progress=progress)
        # `mddpm detect --model run` uses the tumour validation threshold
        shutil.copyfile(out / "eval" / "tumour" / "threshold.json", run / "threshold.json")
    with stage("report", "writing report.html"):
        write_report(out / "report.html", [out / "eval" / s for s in LESION_SETS],
                     title=f"mddpm demo: {method} on synthetic brains")
    return {"seconds": times, "evaluations": summaries, "out": out}


class _Timer:
    def __init__(self, times: dict, name: str):
        self.times, self.name = times, name

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        self.times[self.name] = time.perf_counter() - self.t0
