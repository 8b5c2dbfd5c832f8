"""Running a benchmark: datasets resolved (and generated), each stage run and recorded, then the table
files and the report written from every finished evaluation."""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable

from mddpm import __version__
from mddpm.benchmark import DEFAULT_OUT, OLD_DEFAULT_OUT
from mddpm.benchmark.experiment import DatasetSpec, Experiment, load_experiment
from mddpm.benchmark.plan import (
    Stage,
    figures_for,
    now_iso,
    plan,
    read_records,
    record_finished,
    record_interrupted,
    stage_status,
)
from mddpm.benchmark.table import build_benchmark_table
from mddpm.errors import MddpmError
from mddpm.io import check_new_output, write_json
from mddpm.report.table_files import write_table_files
from mddpm.run_folder import RunFolder


def resolve_datasets(experiment: Experiment, data: dict[str, str], out: Path, experiment_file: Path,
                     create: bool = True, progress: bool = True) -> dict[str, Path | None]:
    """Dataset folder of every dataset: ``--data`` first, then the experiment's path (relative to the experiment
    file), then a generated one (``synth``, written to ``OUT/data/<name>`` when ``create``). None where
    nothing is known yet (only allowed for a dry run, which passes ``create=False``)."""
    unknown = set(data) - {d.name for d in experiment.datasets}
    if unknown:
        raise MddpmError(f"--data {sorted(unknown)[0]}=...: the experiment has no dataset of that name "
                         f"(datasets: {', '.join(d.name for d in experiment.datasets)})")
    roots: dict[str, Path | None] = {}
    for d in experiment.datasets:
        if d.name in data:
            roots[d.name] = Path(data[d.name]).resolve()
        elif d.path is not None:
            roots[d.name] = (experiment_file.parent / d.path).resolve()
        elif d.synth is not None:
            root = (out / "data" / d.name).resolve()
            if create and not (root / "dataset.json").is_file():
                from mddpm.data.synth import synthesize
                from mddpm.data.synth_sizes import SIZES

                print(f"generating the {d.synth['size']} synthetic dataset in {root}", file=sys.stderr)
                synthesize(root, **SIZES[d.synth["size"]], seed=d.synth.get("seed", 0), progress=progress)
            roots[d.name] = root if (root / "dataset.json").is_file() else None
        elif create:
            raise MddpmError(f"{experiment_file}: dataset {d.name!r} has no path: pass --data {d.name}=PATH")
        else:
            roots[d.name] = None
    return roots


def check_dataset(experiment: Experiment, spec: DatasetSpec, root: Path) -> None:
    """Fail before any training if the dataset lacks a split or fold the experiment needs."""
    from mddpm.data.dataset import load_dataset

    dataset = load_dataset(root)
    needed = [s for t in spec.test_sets for s in (t.val, t.test)] + ([spec.healthy_val] if spec.healthy_val else [])
    for split in needed:
        if not dataset.split(split):
            raise MddpmError(f"{root / 'dataset.json'}: split {split!r} is empty")
    for r in experiment.runs:
        for part in ("train", "val"):
            if not dataset.split(part, r.fold):
                raise MddpmError(f"{root / 'dataset.json'}: split {part!r}"
                                 f"{'' if r.fold is None else f' of fold {r.fold}'} is empty")


def _device_choice(device: str) -> tuple[str, str]:
    """``--device`` -> (predict device, evaluate device)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise MddpmError(f"--device {device!r}: expected auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise MddpmError("--device cuda: no CUDA device is available")
    return device, device


def run_stage(stage: Stage, status: str, experiment: Experiment, dataset_root: Path, device: str, force: bool,
              progress: bool, log: Callable[[str], None]) -> None:
    """Run one stage (its output folder is the benchmark's own: an outdated one is replaced)."""
    p = stage.paths
    if stage.kind == "train":
        from mddpm.training.train import train

        if status == "resume":
            train(None, None, out=p.train, resume=True, progress=progress,
                  accelerator="gpu" if device == "cuda" else "cpu")
        else:
            train(dataset_root, stage.method, experiment.preset, out=p.train, fold=stage.run.fold,
                  overrides=experiment.overrides.get(stage.method, []) + stage.run.overrides(), force=True,
                  progress=progress, accelerator="gpu" if device == "cuda" else "cpu")
    elif stage.kind == "predict":
        from mddpm.inference.predict import predict

        predict(p.train, dataset_root, stage.split, p.maps(stage.split), device=device, force=True, progress=progress)
    else:
        from mddpm.evaluation.evaluate import evaluate
        from mddpm.viz.cases import render_case_figure

        t = stage.test_set
        evaluate(p.maps(t.test), p.maps(t.val), p.eval(t), rules=experiment.thresholds,
                 healthy_val=p.maps(stage.dataset.healthy_val) if stage.dataset.healthy_val else None,
                 figures=figures_for(stage, experiment), draw_case=render_case_figure, device=device, force=True,
                 log=log, postprocess=experiment.postprocess, progress=progress)


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_benchmark(experiment_spec: str | os.PathLike, out: str | os.PathLike | None = None,
                  data: dict[str, str] | None = None, resume: bool = True, dry_run: bool = False,
                  only: list[str] | None = None, device: str = "auto", force: bool = False, progress: bool = True,
                  report: bool = True, table_only: bool = False,
                  max_runs: int | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run (or, with ``dry_run``, only list) the experiment's stages and build the table; see the module docstring.
    ``table_only``: run nothing, rebuild the table files and the report from the finished evaluations.
    ``max_runs``: only the experiment's first ``max_runs`` runs (a later call with more resumes them).

    Returns ``{"out", "stages": [{"dataset", "method", "run", "stage", "status", "seconds"}], "table"}``
    (no table for a dry run).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    experiment = load_experiment(experiment_spec)
    if max_runs is not None:
        if max_runs < 1:
            raise MddpmError(f"--runs {max_runs}: must be at least 1")
        experiment.runs = experiment.runs[:max_runs]
    experiment_file = Path(experiment.source)
    out = Path(out).resolve() if out is not None else _default_out(experiment.name, log)
    for m in only or []:
        if m not in experiment.methods:
            raise MddpmError(f"--only {m}: not a method of experiment {experiment.name!r} "
                             f"(methods: {', '.join(experiment.methods)})")
    if table_only:
        return _write_outputs(experiment, out, [], device, report, log)
    if not resume and not dry_run:
        check_new_output(out, force)
    roots = resolve_datasets(experiment, data or {}, out, experiment_file, create=not dry_run, progress=progress)
    for d in experiment.datasets:
        if roots[d.name] is not None and (not dry_run or (roots[d.name] / "dataset.json").is_file()):
            check_dataset(experiment, d, roots[d.name])
    predict_device, _ = _device_choice(device) if not dry_run else (device, device)

    stages = plan(experiment, out, only)
    will_run: set[str] = set()
    statuses = []
    for stage in stages:
        root = roots[stage.dataset.name]
        status, why = ("todo", "--no-resume") if not resume else stage_status(stage, experiment, root, will_run)
        if status == "stale" and not dry_run and not force:
            raise MddpmError(f"{why}; the experiment asks for another config (use --force to retrain, or "
                             "another --out)")
        if status != "done":
            will_run.add(f"{stage.paths.root}|{stage.name}")
        statuses.append((stage, status, why))

    if dry_run:
        for stage, status, why in statuses:
            print(f"{status:7s} {stage.describe()}{f'  ({why})' if why else ''}")
        todo = sum(s != "done" for _, s, _ in statuses)
        print(f"{len(statuses)} stages: {len(statuses) - todo} done, {todo} to run; output folder {out}")
        return {"out": str(out), "stages": [_stage_row(s, st, None) for s, st, _ in statuses], "table": None}

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MddpmError(f"{out}: cannot create the output folder ({e.strerror})") from None
    rows = []
    for i, (stage, status, why) in enumerate(statuses, 1):
        if status == "done":
            rows.append(_stage_row(stage, "skipped", read_records(stage.paths).get(stage.name, {}).get("seconds")))
            continue
        log(f"[{i}/{len(statuses)}] {stage.describe()}{f' ({why})' if why else ''}")
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        try:
            run_stage(stage, status, experiment, roots[stage.dataset.name], predict_device, force, progress, log)
        except BaseException:
            if stage.kind == "train" and RunFolder(stage.paths.train).checkpoint("last").is_file():
                record_interrupted(stage, time.perf_counter() - start, _cpu_seconds() - cpu_start)
            raise
        seconds = time.perf_counter() - start
        record_finished(stage, experiment, seconds, _cpu_seconds() - cpu_start, resumed=status == "resume")
        rows.append(_stage_row(stage, "ran", seconds))
        log(f"[{i}/{len(statuses)}] {stage.describe()}: {seconds:.1f} s")

    write_json(out / "benchmark.json", {"format": "mddpm-benchmark", "mddpm_version": __version__, "updated": now_iso(),
                                        "grid": experiment.to_json(), "data": {k: str(v) for k, v in roots.items()},
                                        "device": predict_device, "only": only, "stages": rows})
    return _write_outputs(experiment, out, rows, predict_device, report, log)


def _default_out(name: str, log: Callable[[str], None]) -> Path:
    """``benchmark_out/<name>``; an earlier benchmark in the old default ``benchmarks/<name>`` is resumed
    there, with a note."""
    out, old = Path(DEFAULT_OUT) / name, Path(OLD_DEFAULT_OUT) / name
    if not out.exists() and (old / "benchmark.json").is_file():
        log(f"note: resuming {old}, the old default output folder (deprecated: pass --out, or move it to {out})")
        return old.resolve()
    return out.resolve()


def _write_outputs(experiment: Experiment, out: Path, rows: list[dict], device: str, report: bool,
                   log: Callable[[str], None]) -> dict:
    """Table files and report from every finished evaluation of ``experiment`` in ``out``."""
    table = build_benchmark_table(experiment, out)
    if not table["evaluations"]:
        raise MddpmError(f"{out}: no finished evaluation of experiment {experiment.name!r} to tabulate")
    write_table_files(table, out)
    if report:
        from mddpm.report.html import write_report

        write_report(out / "report.html", [Path(e["path"]) for e in table["evaluations"]],
                     experiment.title, table=table, cache_dir=out / "cache",
                     device=_device_choice(device)[1])
    log(f"table: {out / 'table.md'}" + (f"; report: {out / 'report.html'}" if report else ""))
    return {"out": str(out), "stages": rows, "table": table}


def _stage_row(stage: Stage, status: str, seconds: float | None) -> dict:
    return {"dataset": stage.dataset.name, "method": stage.method, "run": stage.run.tag, "stage": stage.name,
            "status": status, "seconds": seconds}

