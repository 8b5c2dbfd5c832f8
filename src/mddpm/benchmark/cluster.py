"""Handing a benchmark's pending runs to submitit: ``local`` (one process per run on this machine, at most
``array_parallelism`` at a time, the launcher waits) or ``slurm`` (one SLURM job array, one task per run).
Each job calls :func:`mddpm.benchmark.execute.run_job`, the code path of the in-process executor."""

from __future__ import annotations

import datetime as _dt
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mddpm.benchmark.execute import run_job
from mddpm.benchmark.plan import Stage
from mddpm.errors import MddpmError
from mddpm.parallel import usable_cpus

EXECUTORS = ("inline", "local", "slurm")


@dataclass
class ClusterOptions:
    """Resources of each job (one run). ``time_min``: wall-time limit in minutes; ``mem``: e.g. "32G";
    ``sbatch``: extra ``#SBATCH --KEY=VALUE`` lines; ``jobs_dir``: submitit's folder of scripts, pickles and
    logs (default ``OUT/jobs/<date-time>``)."""

    partition: str | None = None
    time_min: int = 24 * 60
    gpus_per_job: int | None = None  # None: 1 under SLURM; locally 1 when CUDA is available, else 0
    cpus_per_job: int | None = None
    mem: str | None = None
    array_parallelism: int | None = None  # None: 1 locally, SLURM's 256 otherwise
    sbatch: dict[str, str] = field(default_factory=dict)
    jobs_dir: Path | None = None
    loggers: tuple[str, ...] = ()  # --logger specs of each job's training and evaluation


@dataclass
class Submitted:
    """One submitted run: its stages (for the report rows) and its submitit job."""

    stages: list[Stage]
    job: object

    @property
    def name(self) -> str:
        s = self.stages[0]
        return f"{s.dataset.name}/{s.method}/{s.run.tag}"

    def log_paths(self) -> str:
        return f"{self.job.paths.stdout} and {self.job.paths.stderr}"


def check_executor(kind: str) -> None:
    """Fail at once (before any dataset is generated) when ``kind`` cannot run here."""
    if kind not in EXECUTORS:
        raise MddpmError(f"--executor {kind!r}: expected one of {', '.join(EXECUTORS)}")
    if kind == "slurm" and shutil.which("srun") is None:
        raise MddpmError("--executor slurm: no `srun` on PATH; run the launcher on a SLURM login node "
                         "(or use --executor local)")


def make_executor(kind: str, folder: Path, options: ClusterOptions):
    """A submitit executor writing into ``folder`` (SLURM: one ``#SBATCH`` line per option given)."""
    import submitit

    if kind == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=options.time_min)
        return executor
    check_executor(kind)
    executor = submitit.SlurmExecutor(folder=folder)
    executor.update_parameters(**slurm_parameters(options))
    return executor


def slurm_parameters(options: ClusterOptions) -> dict:
    """submitit's SLURM parameters for ``options`` (one ``#SBATCH`` line per option given)."""
    params = {"time": options.time_min, "gpus_per_node": 1 if options.gpus_per_job is None else options.gpus_per_job,
              "job_name": "mddpm-benchmark"}
    optional = {"partition": options.partition, "cpus_per_task": options.cpus_per_job, "mem": options.mem,
                "array_parallelism": options.array_parallelism,
                "additional_parameters": dict(options.sbatch) or None}
    return {**params, **{k: v for k, v in optional.items() if v is not None}}


def write_dry_run_script(runs: list[list[Stage]], experiment_file: str, out: Path, roots: dict[str, Path | None],
                         device: str, resume: bool, force: bool, options: ClusterOptions) -> Path:
    """``--executor slurm --dry-run``: write the job-array script that a launch would submit (the ``#SBATCH``
    lines of ``options``, one array task per pending run, each task's command spelled out) to
    ``JOBS/dry-run.sbatch`` and return its path. Needs no cluster and submits nothing. (A real launch submits
    the same ``#SBATCH`` lines through submitit, whose task command unpickles the same :func:`run_job` call.)"""
    import json
    import shlex
    import sys

    from submitit.slurm.slurm import _make_sbatch_string

    folder = jobs_folder(out, options)
    threads = job_threads("slurm", options)
    cases = []
    for i, stages in enumerate(runs):
        s = stages[0]
        root = roots.get(s.dataset.name) or (out / "data" / s.dataset.name)
        kwargs = {"experiment_file": experiment_file, "out": str(out), "dataset": s.dataset.name,
                  "dataset_root": str(root), "method": s.method, "run": s.run.tag, "device": device,
                  "resume": resume, "force": force, "threads": threads, "loggers": list(options.loggers)}
        code = (f"import json; from mddpm.benchmark.execute import run_job; "
                f"run_job(**json.loads({json.dumps(json.dumps(kwargs))}))")
        cases.append(f"    {i}) # {s.dataset.name}/{s.method}/{s.run.tag}\n"
                     f"        MDDPM_JOB={shlex.quote(code)} ;;")
    script = _make_sbatch_string(command=f'{shlex.quote(sys.executable)} -c "$MDDPM_JOB"', folder=folder,
                                 map_count=len(runs), **slurm_parameters(options))
    head, _, tail = script.rpartition("\n# command\n")
    dispatch = "\n".join(["# one array task per pending run", 'case "$SLURM_ARRAY_TASK_ID" in', *cases,
                          '    *) echo "no run for array task $SLURM_ARRAY_TASK_ID" >&2; exit 1 ;;', "esac"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dry-run.sbatch"
    path.write_text(f"{head}\n{dispatch}\n\n# command\n{tail}")
    return path


def job_threads(kind: str, options: ClusterOptions) -> int | None:
    """CPU threads of each job: ``cpus_per_job`` when given; for ``local`` jobs else this machine's CPUs
    shared among the ``array_parallelism`` jobs that run at once (so side-by-side jobs do not each take
    every core); for SLURM else None (the job's own defaults within its allocation)."""
    if options.cpus_per_job:
        return options.cpus_per_job
    if kind == "local":
        return max(1, usable_cpus() // (options.array_parallelism or 1))
    return None


def jobs_folder(out: Path, options: ClusterOptions) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(options.jobs_dir) if options.jobs_dir else out / "jobs" / stamp


def submit_runs(kind: str, runs: list[list[Stage]], experiment_file: str, out: Path, roots: dict[str, Path],
                device: str, resume: bool, force: bool, options: ClusterOptions, wait: bool,
                log: Callable[[str], None]) -> list[dict] | None:
    """Submit one job per run (a list of the stages of one run folder). Waits (always for ``local``) and
    returns every stage's row; raises naming each failed run and its log files. Without waiting (``slurm``),
    prints the job ids and returns None."""
    folder = jobs_folder(out, options)
    executor = make_executor(kind, folder, options)
    threads = job_threads(kind, options)

    def arguments(stages: list[Stage]) -> dict:
        s = stages[0]
        return {"experiment_file": experiment_file, "out": str(out), "dataset": s.dataset.name,
                "dataset_root": str(roots[s.dataset.name]), "method": s.method, "run": s.run.tag,
                "device": device, "resume": resume, "force": force, "threads": threads,
                "loggers": list(options.loggers)}

    if kind == "slurm":
        with executor.batch():
            jobs = [executor.submit(run_job, **arguments(stages)) for stages in runs]
        submitted = [Submitted(stages, job) for stages, job in zip(runs, jobs)]
        log(f"submitted {len(submitted)} runs as SLURM job array {jobs[0].job_id.split('_')[0]}; "
            f"scripts and logs in {folder}")
        for s in submitted:
            log(f"  {s.job.job_id}  {s.name}  log {s.job.paths.stdout}")
        if not wait:
            log("when they have finished: the same command with --table-only builds Table 1")
            return None
    else:
        submitted = _run_locally(executor, runs, arguments, options, log)
    return _collect(submitted, log)


def _run_locally(executor, runs: list[list[Stage]], arguments: Callable[[list[Stage]], dict],
                 options: ClusterOptions, log: Callable[[str], None]) -> list[Submitted]:
    """Start one local process per run, at most ``array_parallelism`` at a time (one GPU each, round robin,
    when CUDA is available); returns when all have ended."""
    import torch

    n_gpus = torch.cuda.device_count() if options.gpus_per_job is None or options.gpus_per_job > 0 else 0
    parallel = options.array_parallelism or 1
    submitted: list[Submitted] = []
    for i, stages in enumerate(runs):
        while sum(not s.job.done() for s in submitted) >= parallel:
            time.sleep(0.5)
        if n_gpus:
            executor.update_parameters(gpus_per_node=1, visible_gpus=(i % n_gpus,))
        args = arguments(stages)
        job = executor.submit(run_job, **args)
        submitted.append(Submitted(stages, job))
        log(f"started {submitted[-1].name} as local job {job.job_id} ({args['threads']} CPU "
            f"thread{'s' * (args['threads'] > 1)}); log {job.paths.stderr}")
    while not all(s.job.done() for s in submitted):
        time.sleep(0.5)
    return submitted


def _collect(submitted: list[Submitted], log: Callable[[str], None]) -> list[dict]:
    """Every job's stage rows; one line per failed job with its logs, then an error if any failed."""
    rows, failed = [], []
    for s in submitted:
        try:
            rows += s.job.result()
        except Exception as e:  # submitit re-raises the job's error (or reports a killed job)
            last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            log(f"run {s.name} (job {s.job.job_id}) failed: {last}; logs: {s.log_paths()}")
            failed.append(s.name)
    if failed:
        raise MddpmError(f"{len(failed)} of {len(submitted)} runs failed ({', '.join(failed)}); "
                         "their logs are named above; rerun the same command to retry them")
    return rows
