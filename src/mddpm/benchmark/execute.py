"""Running the stages of one benchmark run (dataset × method × fold or seed) under its lock: the one code
path that the in-process executor calls directly and every submitit job (local or SLURM) calls in its own
process through :func:`run_job`."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Callable

from mddpm.benchmark.experiment import Experiment, load_experiment
from mddpm.benchmark.plan import (
    Stage,
    examples_for,
    figures_for,
    plan,
    read_records,
    record_finished,
    record_interrupted,
    stage_status,
)
from mddpm.device import resolve_device
from mddpm.errors import MddpmError
from mddpm.folder_lock import FolderLock
from mddpm.messages import note
from mddpm.run_folder import RunFolder


def run_stage(stage: Stage, status: str, experiment: Experiment, dataset_root: Path, device: str, force: bool,
              progress: bool, log: Callable[[str], None], loggers: tuple[str, ...] = ()) -> None:
    """Run one stage (its output folder is the benchmark's own: an outdated one is replaced); ``loggers``
    (``--logger`` specs) track its training and receive its evaluation's metrics."""
    p = stage.paths
    if stage.kind == "train":
        from mddpm.training.train import train

        if status == "resume":
            train(None, None, out=p.train, resume=True, progress=progress, loggers=loggers,
                  accelerator="gpu" if device == "cuda" else "cpu")
        else:
            train(dataset_root, experiment.method_of(stage.method), experiment.preset, out=p.train,
                  fold=stage.run.fold, overrides={**experiment.overrides_of(stage.method), **stage.run.overrides()},
                  force=True, progress=progress, accelerator="gpu" if device == "cuda" else "cpu", loggers=loggers)
    elif stage.kind == "predict":
        from mddpm.inference.predict import predict

        predict(p.train, dataset_root, stage.split, p.maps(stage.split), device=device, force=True, progress=progress)
    else:
        from mddpm.evaluation.evaluate import evaluate
        from mddpm.training.loggers import log_evaluation
        from mddpm.viz.cases import render_case_figure

        t, examples = stage.test_set, examples_for(stage, experiment)
        evaluate(p.maps(t.test), p.maps(t.val), p.eval(t), rules=experiment.thresholds,
                 healthy_val=p.maps(stage.dataset.healthy_val) if stage.dataset.healthy_val else None,
                 figures=figures_for(stage, experiment), examples=examples, pr_curve=bool(examples),
                 draw_case=render_case_figure, device=device, force=True,
                 log=log, postprocess=experiment.postprocess, progress=progress,
                 track=(lambda report, out: log_evaluation(loggers, report, out)) if loggers else None)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def stage_row(stage: Stage, status: str, seconds: float | None) -> dict:
    return {"dataset": stage.dataset.name, "method": stage.method, "run": stage.run.tag, "stage": stage.name,
            "status": status, "seconds": seconds}


def execute_run(experiment: Experiment, stages: list[Stage], dataset_root: Path, device: str, resume: bool,
                force: bool, progress: bool, log: Callable[[str], None], first: int = 1,
                total: int | None = None, loggers: tuple[str, ...] = ()) -> list[dict]:
    """Run the unfinished ``stages`` of ONE run (same run folder) while holding its lock; their status is
    decided inside the lock, so a run finished meanwhile by another process is skipped. ``first``/``total``
    number the log lines. Returns one row per stage (status "ran" or "skipped"). Raises
    :class:`~mddpm.folder_lock.FolderLocked` when another process holds the run."""
    total = total or len(stages)
    rows = []
    with FolderLock(stages[0].paths.root, log):
        will_run: set[str] = set()
        for i, stage in enumerate(stages, first):
            status, why = ("todo", "--no-resume") if not resume else stage_status(stage, experiment, dataset_root,
                                                                                    will_run)
            if status == "stale" and not force:
                raise MddpmError(f"{why}; the experiment asks for another config (use --force to retrain, or "
                                 "another --out)")
            if status == "done":
                rows.append(stage_row(stage, "skipped", read_records(stage.paths).get(stage.name, {}).get("seconds")))
                continue
            will_run.add(f"{stage.paths.root}|{stage.name}")
            log(f"[{i}/{total}] {stage.describe()}{f' ({why})' if why else ''}")
            start, cpu_start = time.perf_counter(), cpu_seconds()
            try:
                run_stage(stage, status, experiment, dataset_root, device, force, progress, log, loggers)
            except BaseException:
                if stage.kind == "train" and RunFolder(stage.paths.train).checkpoint("last").is_file():
                    record_interrupted(stage, time.perf_counter() - start, cpu_seconds() - cpu_start)
                raise
            seconds = time.perf_counter() - start
            record_finished(stage, experiment, seconds, cpu_seconds() - cpu_start, resumed=status == "resume")
            rows.append(stage_row(stage, "ran", seconds))
            log(f"[{i}/{total}] {stage.describe()}: {seconds:.1f} s")
    return rows


def run_job(experiment_file: str, out: str, dataset: str, dataset_root: str, method: str, run: str, device: str,
            resume: bool, force: bool, threads: int | None = None, loggers: tuple[str, ...] = ()) -> list[dict]:
    """What a submitted job runs, in its own process: the stages of one run, through :func:`execute_run`.
    ``threads``: the CPU threads of this job (torch and the evaluation kernels); None leaves the defaults."""
    if threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(threads)  # read by mddpm.parallel.usable_threads
        torch.set_num_threads(threads)
    experiment = load_experiment(experiment_file)
    stages = [s for s in plan(experiment, Path(out), [method]) if s.dataset.name == dataset and s.run.tag == run]
    if not stages:
        raise MddpmError(f"{experiment_file}: no run {dataset}/{method}/{run}")
    return execute_run(experiment, stages, Path(dataset_root), resolve_device(device).type, resume, force,
                       progress=False, log=note, loggers=tuple(loggers))
