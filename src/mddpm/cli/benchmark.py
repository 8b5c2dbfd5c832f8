"""``mddpm benchmark EXPERIMENT``: train, predict and evaluate every method × run of an experiment; Table 1
with p-values."""

from __future__ import annotations

import argparse

from mddpm.benchmark import DEFAULT_OUT


def add_parser(sub) -> None:
    p = sub.add_parser(
        "benchmark", help="run an experiment (methods x runs x test sets) and build Table 1 (mean ± std, p-values)",
        description="For every dataset x method x run (fold or seed) of EXPERIMENT: train (skipped when RUN/best.pt "
                    "exists with the same config), predict the validation and test splits, evaluate each test set "
                    "(skipped when done from the same inputs); then write OUT/table.{md,csv,json} and OUT/report.html. "
                    "EXPERIMENT is a JSON file or a shipped experiment: paper, synthetic.")
    p.add_argument("experiment", metavar="EXPERIMENT",
                   help="experiment file, or a shipped experiment name (paper, synthetic)")
    p.add_argument("--out", metavar="DIR", help=f"output folder (default: {DEFAULT_OUT}/<experiment name>)")
    p.add_argument("--data", action="append", default=[], metavar="NAME=PATH",
                   help="folder of the experiment's dataset NAME (repeatable); e.g. --data ixi=PATH for the paper "
                        "experiment, PATH written by `mddpm import-pddpm`")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="skip finished stages (default); --no-resume runs every stage again (needs --force when "
                        "the output folder is not empty)")
    p.add_argument("--dry-run", action="store_true",
                   help="list every stage and whether it would run; change nothing (with --executor slurm, only "
                        "write the job-array script it would submit: OUT/jobs/<time>/dry-run.sbatch)")
    p.add_argument("--runs", type=int, metavar="N",
                   help="only the experiment's first N runs (folds or seeds), e.g. --runs 1 for a quick table; "
                        "a later call with more resumes the finished ones")
    p.add_argument("--table-only", action="store_true",
                   help="run nothing: rebuild the table files and the report from the finished evaluations in --out")
    p.add_argument("--only", action="append", metavar="METHOD",
                   help="run only this method (repeatable); the table still includes every finished method")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where training, prediction and evaluation run (default: auto)")
    p.add_argument("--force", action="store_true",
                   help="retrain runs whose saved config differs from the experiment; with --no-resume, overwrite")
    p.add_argument("--no-report", action="store_true", help="write the table files but not report.html")
    p.add_argument("--logger", action="append", default=[], metavar="NAME[:key=value,...]",
                   help="experiment tracker of every run (repeatable, as in mddpm train): its training, and its "
                        "evaluation metrics per test set, e.g. mlflow:tracking_uri=sqlite:////data/mlflow.db")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--run", action="append", dest="select", metavar="METHOD/RUN",
                   help="only this run (repeatable), e.g. mddpm-fpmcm/fold2 or vae/seed3141 (or vae/3141)")
    c = p.add_argument_group("executor", "where the pending runs go (one job per method x fold or seed; each job "
                                         "holds the run's lock; see docs/benchmark.md)")
    c.add_argument("--executor", default="inline", choices=["inline", "local", "slurm"],
                   help="inline: this process, one run after another (default); local: one process per run through "
                        "submitit on this machine (waits); slurm: one SLURM job array through submitit")
    c.add_argument("--wait", action="store_true",
                   help="slurm: wait for the jobs, then build the table (default: print the job ids and return)")
    c.add_argument("--partition", help="slurm partition")
    c.add_argument("--time-min", type=int, default=24 * 60, metavar="MIN",
                   help="wall-time limit of each job in minutes (default 1440)")
    c.add_argument("--gpus-per-job", type=int, metavar="N",
                   help="GPUs per job (default: 1 under slurm; locally 1 when CUDA is available)")
    c.add_argument("--cpus-per-job", type=int, metavar="N",
                   help="CPUs per job, also its torch threads (default for local: this machine's CPUs "
                        "shared among the jobs that run at once)")
    c.add_argument("--mem", metavar="SIZE", help="memory per job, e.g. 32G")
    c.add_argument("--array-parallelism", type=int, metavar="N",
                   help="at most N jobs at once (default: 1 for local, SLURM's 256)")
    c.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra #SBATCH --KEY=VALUE line (repeatable), e.g. --sbatch account=proj --sbatch qos=high")
    c.add_argument("--jobs-dir", metavar="DIR", help="submitit's scripts, pickles and logs (default OUT/jobs/<time>)")
    p.set_defaults(func=run)


def run(args) -> int:
    from mddpm.benchmark.cluster import ClusterOptions
    from mddpm.benchmark.experiment import parse_data_args
    from mddpm.benchmark.runner import run_benchmark
    from mddpm.config import parse_assignments
    from mddpm.report.formatting import format_p

    sbatch = {key.lstrip("-"): value for key, value in
              parse_assignments(args.sbatch, "--sbatch", "account=proj", typed=False).items()}
    cluster = ClusterOptions(partition=args.partition, time_min=args.time_min, gpus_per_job=args.gpus_per_job,
                             cpus_per_job=args.cpus_per_job, mem=args.mem, array_parallelism=args.array_parallelism,
                             sbatch=sbatch, jobs_dir=args.jobs_dir)
    result = run_benchmark(args.experiment, out=args.out, data=parse_data_args(args.data), resume=args.resume,
                           dry_run=args.dry_run, only=args.only, device=args.device, force=args.force,
                           progress=not args.no_progress, report=not args.no_report, table_only=args.table_only,
                           runs=args.runs, select=args.select, executor=args.executor, cluster=cluster,
                           wait=args.wait, loggers=tuple(args.logger))
    table = result["table"]
    if table is None:
        return 0
    for col in table["columns"]:
        print(f"{col['dataset']} / {col['test_set']}")
        for row in table["rows"]:
            cell = row["cells"].get(col["key"])
            if not cell:
                continue
            dice, auprc = cell["dice"], cell["auprc"]
            text = "  ".join(f"{name} {_pm(stat)}" for name, stat in (("DICE", dice), ("AUPRC", auprc)))
            p = f"  p(DICE) {format_p(cell['p_dice'])}" if cell["p_dice"] else ""
            print(f"  {row['label']:<34s} {text}{p}  ({dice['n_runs']} runs)")
    print(f"written to {result['out']}")
    return 0


def _pm(stat: dict) -> str:
    if stat["mean"] is None:
        return "n/a"
    return f"{100 * stat['mean']:.2f}" + (f" ± {100 * stat['std']:.2f}" if stat["n_runs"] > 1 else "")
