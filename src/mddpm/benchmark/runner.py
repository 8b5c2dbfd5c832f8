"""Running a benchmark: datasets resolved (and generated), each stage run and recorded, then the table
files and the report written from every finished evaluation."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

from mddpm._version import __version__
from mddpm.benchmark import DEFAULT_OUT, OLD_DEFAULT_OUT
from mddpm.benchmark.cluster import ClusterOptions, check_executor, submit_runs, write_dry_run_script
from mddpm.benchmark.execute import execute_run, stage_row
from mddpm.benchmark.experiment import DatasetSpec, Experiment, load_experiment
from mddpm.benchmark.plan import Stage, now_iso, plan, read_records, stage_status
from mddpm.benchmark.table import build_benchmark_table
from mddpm.device import resolve_device
from mddpm.errors import MddpmError
from mddpm.folder_lock import FolderLocked
from mddpm.io import check_new_output, write_json
from mddpm.messages import note, say
from mddpm.report.table_files import write_table_files
from mddpm.training.loggers import parse_logger


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
                from mddpm.data.synth.build import synthesize
                from mddpm.data.synth.sizes import SIZES

                note(f"generating the {d.synth['size']} synthetic dataset in {root}")
                synthesize(root, **SIZES[d.synth["size"]], seed=d.synth.get("seed", 0),
                           family=d.synth.get("family", "template"),
                           test_families=tuple(d.synth.get("test_families", ())), progress=progress)
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
    for r in {r for m in experiment.methods for r in experiment.runs_of(m)}:
        for part in ("train", "val"):
            if not dataset.split(part, r.fold):
                raise MddpmError(f"{root / 'dataset.json'}: split {part!r}"
                                 f"{'' if r.fold is None else f' of fold {r.fold}'} is empty")


def run_benchmark(experiment_spec: str | os.PathLike, out: str | os.PathLike | None = None,
                  data: dict[str, str] | None = None, resume: bool = True, dry_run: bool = False,
                  only: list[str] | None = None, device: str = "auto", force: bool = False, progress: bool = True,
                  report: bool = True, table_only: bool = False, runs: int | None = None,
                  select: list[str] | None = None, executor: str = "inline", cluster: ClusterOptions | None = None,
                  wait: bool = False, log: Callable[[str], None] | None = None, loggers: tuple[str, ...] = ()) -> dict:
    """Run (or, with ``dry_run``, only list) the experiment's stages and build the table; see the module docstring.
    ``table_only``: run nothing, rebuild the table files and the report from the finished evaluations.
    ``runs``: only the experiment's first ``runs`` runs (a later call with more resumes them).
    ``select``: only these runs, each "METHOD/RUN" (RUN: a run tag such as fold0 or seed3141, or its number).
    ``executor``: "inline" (this process, one run after another), "local" or "slurm" (one submitit job per
    pending run, see :mod:`~mddpm.benchmark.cluster`, with ``cluster`` resources); a slurm launch returns at
    once (no table) unless ``wait``; a slurm dry run writes the job-array script it would submit
    (``OUT/jobs/<date-time>/dry-run.sbatch``, or in ``cluster.jobs_dir``) and submits nothing. A run locked
    by another process is skipped with a one-line note.

    Returns ``{"out", "stages": [{"dataset", "method", "run", "stage", "status", "seconds"}], "table"}``
    (no table for a dry run or an unawaited slurm launch).
    """
    log = log or note
    if not dry_run:
        check_executor(executor)
    experiment = load_experiment(experiment_spec)
    for spec in loggers:
        parse_logger(spec)  # a bad --logger is refused before anything runs
    if runs is not None:
        if runs < 1:
            raise MddpmError(f"--runs {runs}: must be at least 1")
        experiment.runs = experiment.runs[:runs]
        experiment.variants = {row: replace(v, runs=v.runs[:runs] if v.runs else None)
                               for row, v in experiment.variants.items()}
    experiment_file = Path(experiment.source)
    out = Path(out).resolve() if out is not None else _default_out(experiment.name, log)
    for m in only or []:
        if m not in experiment.methods:
            raise MddpmError(f"--only {m}: not a method of experiment {experiment.name!r} "
                             f"(methods: {', '.join(experiment.methods)})")
    selected = select_runs(experiment, select)
    if table_only:
        return _write_outputs(experiment, out, [], report, log)
    if not resume and not dry_run:
        check_new_output(out, force)
    roots = resolve_datasets(experiment, data or {}, out, experiment_file, create=not dry_run, progress=progress)
    for d in experiment.datasets:
        if roots[d.name] is not None and (not dry_run or (roots[d.name] / "dataset.json").is_file()):
            check_dataset(experiment, d, roots[d.name])
    predict_device = resolve_device(device).type if not dry_run else device

    stages = [s for s in plan(experiment, out, only) if selected is None or (s.method, s.run.tag) in selected]
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
            say(f"{status:7s} {stage.describe()}{f'  ({why})' if why else ''}")
        todo = sum(s != "done" for _, s, _ in statuses)
        say(f"{len(statuses)} stages: {len(statuses) - todo} done, {todo} to run; output folder {out}")
        if executor == "slurm":
            pending = [[s for s, _, _ in run] for run in _by_run(statuses) if any(st != "done" for _, st, _ in run)]
            if pending:
                script = write_dry_run_script(pending, str(experiment_file), out, roots, device, resume, force,
                                              replace(cluster or ClusterOptions(), loggers=tuple(loggers)))
                say(f"slurm: the job array of {len(pending)} runs that would be submitted (nothing submitted): "
                    f"{script}")
        return {"out": str(out), "stages": [stage_row(s, st, None) for s, st, _ in statuses], "table": None}

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MddpmError(f"{out}: cannot create the output folder ({e.strerror})") from None
    rows, pending = [], []
    for run_stages in _by_run(statuses):
        if all(status == "done" for _, status, _ in run_stages):
            rows += [stage_row(s, "skipped", read_records(s.paths).get(s.name, {}).get("seconds"))
                     for s, _, _ in run_stages]
        else:
            pending.append([s for s, _, _ in run_stages])
    if executor == "inline":
        for run_stages in pending:
            try:
                rows += execute_run(experiment, run_stages, roots[run_stages[0].dataset.name], predict_device, resume,
                                    force, progress, log, first=stages.index(run_stages[0]) + 1, total=len(stages),
                                    loggers=tuple(loggers))
            except FolderLocked as e:
                log(f"skipped: {e}")
                rows += [stage_row(s, "locked", None) for s in run_stages]
    elif pending:
        ran = submit_runs(executor, pending, str(experiment_file), out, roots, device, resume, force,
                          replace(cluster or ClusterOptions(), loggers=tuple(loggers)), wait, log)
        if ran is None:
            return {"out": str(out), "stages": rows, "table": None}
        rows += ran

    write_json(out / "benchmark.json", {
        "format": "mddpm-benchmark", "mddpm_version": __version__, "updated": now_iso(),
        "experiment": experiment.to_json(), "data": {k: str(v) for k, v in roots.items()}, "device": predict_device,
        "only": only, "select": select, "executor": executor, "stages": rows})
    return _write_outputs(experiment, out, rows, report, log)


def select_runs(experiment: Experiment, selectors: list[str] | None) -> set[tuple[str, str]] | None:
    """``["METHOD/RUN", ...]`` -> {(method, run tag)}; RUN is a tag (fold0, seed3141) or the fold or seed
    number. None (every run) when no selector is given."""
    if not selectors:
        return None
    selected = set()
    for text in selectors:
        method, _, run = text.partition("/")
        if method not in experiment.methods:
            raise MddpmError(f"--run {text}: {method!r} is not a method of experiment {experiment.name!r} "
                             f"(methods: {', '.join(experiment.methods)})")
        tags = [r.tag for r in experiment.runs_of(method) if run in (r.tag, str(r.fold), str(r.seed))]
        if not tags:
            raise MddpmError(f"--run {text}: expected METHOD/RUN with RUN one of "
                             f"{', '.join(r.tag for r in experiment.runs_of(method))}")
        selected.add((method, tags[0]))
    return selected


def _by_run(statuses: list[tuple[Stage, str, str]]) -> list[list[tuple[Stage, str, str]]]:
    """The (stage, status, why) triples grouped by run folder, in plan order."""
    groups: dict[Path, list] = {}
    for item in statuses:
        groups.setdefault(item[0].paths.root, []).append(item)
    return list(groups.values())


def _default_out(name: str, log: Callable[[str], None]) -> Path:
    """``benchmark_out/<name>``; an earlier benchmark in the old default ``benchmarks/<name>`` is resumed
    there, with a note."""
    out, old = Path(DEFAULT_OUT) / name, Path(OLD_DEFAULT_OUT) / name
    if not out.exists() and (old / "benchmark.json").is_file():
        log(f"note: resuming {old}, the old default output folder (deprecated: pass --out, or move it to {out})")
        return old.resolve()
    return out.resolve()


def _write_outputs(experiment: Experiment, out: Path, rows: list[dict], report: bool,
                   log: Callable[[str], None]) -> dict:
    """Table files and report from every finished evaluation of ``experiment`` in ``out``."""
    table = build_benchmark_table(experiment, out)
    if not table["evaluations"]:
        raise MddpmError(f"{out}: no finished evaluation of experiment {experiment.name!r} to tabulate")
    write_table_files(table, out)
    if report:
        from mddpm.report.html import write_report

        write_report(out / "report.html", [Path(e["path"]) for e in table["evaluations"]],
                     experiment.title, table=table)
    log(f"table: {out / 'table.md'}" + (f"; report: {out / 'report.html'}" if report else ""))
    return {"out": str(out), "stages": rows, "table": table}
