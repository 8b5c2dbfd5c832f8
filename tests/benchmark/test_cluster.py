"""mddpm benchmark on a cluster: the run selector, the run lock, the SLURM script submitit would write, and
the local submitit executor (real processes) giving the in-process executor's table."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark_fakes import write_experiment
from mddpm.benchmark.cluster import ClusterOptions, job_threads, make_executor
from mddpm.benchmark.execute import execute_run, run_job
from mddpm.benchmark.experiment import load_experiment
from mddpm.benchmark.plan import plan
from mddpm.benchmark.runner import run_benchmark
from mddpm.cli.main import main
from mddpm.errors import MddpmError
from mddpm.folder_lock import LOCK_NAME, FolderLock, FolderLocked, read_lock
from mddpm.parallel import usable_cpus, usable_threads


def _run(experiment, out, data, **kw):
    messages = []
    result = run_benchmark(experiment, out=out, data=data, report=False, device="cpu", log=messages.append, **kw)
    return result, messages


def test_run_selector_runs_only_the_named_runs(tmp_path, phantom_dataset, fake_stages):
    experiment, out, data = write_experiment(tmp_path), tmp_path / "out", {"phantom": str(phantom_dataset)}
    result, _ = _run(experiment, out, data, select=["vae/seed2", "intensity/1"])
    assert {(m, r) for m, r, _, _ in fake_stages} == {("vae", "seed2"), ("intensity", "seed1")}
    assert len(fake_stages) == 2 * 5 and not (out / "runs/phantom/vae/seed1").exists()
    # the table gathers what is finished: one run per method
    assert {row["cells"]["phantom/blob"]["dice"]["n_runs"] for row in result["table"]["rows"]} == {1}
    for bad, message in (("nope/seed1", "'nope' is not a method"), ("vae/seed9", "RUN one of seed1, seed2"),
                         ("vae", "RUN one of")):
        with pytest.raises(MddpmError, match=message):
            _run(experiment, out, data, select=[bad])


def test_lock_refuses_a_second_trainer_and_is_released(tmp_path, phantom_dataset, fake_stages, capsys):
    experiment, out, data = write_experiment(tmp_path), tmp_path / "out", {"phantom": str(phantom_dataset)}
    run_root = out / "runs/phantom/vae/seed1"
    with FolderLock(run_root) as held:
        holder = read_lock(run_root / LOCK_NAME)
        assert holder == held.holder and holder["host"] == socket.gethostname() and holder["pid"] == os.getpid()
        stages = [s for s in plan(load_experiment(experiment), out, ["vae"]) if s.run.tag == "seed1"]
        with pytest.raises(FolderLocked, match=f"in use by pid {os.getpid()} on {socket.gethostname()}"):
            execute_run(load_experiment(experiment), stages, phantom_dataset, "cpu", True, False, False, print)
        result, messages = _run(experiment, out, data)
        assert ("vae", "seed1") not in {(m, r) for m, r, _, _ in fake_stages}  # never trained while locked
        locked = [m for m in messages if m.startswith("skipped:")]
        assert len(locked) == 1 and "\n" not in locked[0] and str(run_root / LOCK_NAME) in locked[0]
        assert {r["status"] for r in result["stages"] if (r["method"], r["run"]) == ("vae", "seed1")} == {"locked"}
        # the CLI: one line, and the other runs are done already
        assert main(["benchmark", str(experiment), "--out", str(out), "--data", f"phantom={phantom_dataset}",
                     "--no-report", "--device", "cpu", "--no-progress"]) == 0
        assert "skipped: " in capsys.readouterr().err
    assert not (run_root / LOCK_NAME).exists()
    _run(experiment, out, data)  # released: now it runs
    assert ("vae", "seed1", "train", "todo") in fake_stages
    assert not list(out.rglob(LOCK_NAME))


def test_stale_lock_of_a_dead_process_or_slurm_job_is_taken_over(tmp_path, monkeypatch):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = tmp_path / "run" / LOCK_NAME
    lock.parent.mkdir()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(gone.stdout), "started": "then"}))
    notes = []
    with FolderLock(lock.parent, notes.append):
        assert read_lock(lock)["pid"] == os.getpid()
    assert "a process or job that is gone" in notes[0] and not lock.exists()
    other = {"host": "another-node", "pid": 1, "started": "then", "job": "123_4"}
    lock.write_text(json.dumps(other))
    with pytest.raises(FolderLocked, match=r"in use by pid 1 on another-node \(started at then, job 123_4\)"):
        FolderLock(lock.parent).__enter__()
    assert read_lock(lock) == other  # never removed from here
    # a SLURM job's lock: stale once squeue no longer lists the job
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    squeue = fake_bin / "squeue"
    squeue.write_text('#!/bin/sh\n[ "$5" = 77 ] && echo 77\nexit 0\n')  # squeue -h -o %i -j ID: only job 77 runs
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    lock.write_text(json.dumps({**other, "slurm_job": "77"}))
    with pytest.raises(FolderLocked, match="job 123_4"):
        FolderLock(lock.parent).__enter__()
    lock.write_text(json.dumps({**other, "slurm_job": "78"}))
    with FolderLock(lock.parent):
        assert read_lock(lock)["pid"] == os.getpid()


def test_slurm_job_array_script_without_submitting(tmp_path, monkeypatch):
    options = ClusterOptions(partition="gpu", time_min=600, gpus_per_job=1, cpus_per_job=8, mem="32G",
                             array_parallelism=4, sbatch={"account": "proj", "qos": "high"})
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))
    with pytest.raises(MddpmError, match="--executor slurm: no `srun` on PATH"):
        make_executor("slurm", tmp_path / "jobs", options)
    with pytest.raises(MddpmError, match="--executor slurm: no `srun` on PATH"):  # before any data is made
        run_benchmark(write_experiment(tmp_path), out=tmp_path / "out", executor="slurm")
    assert not (tmp_path / "out").exists()
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin))
    executor = make_executor("slurm", tmp_path / "jobs", options)
    from submitit.slurm.slurm import _make_sbatch_string

    script = _make_sbatch_string(command="python -m submitit.core._submit JOBS", folder=executor.folder, map_count=45,
                                 **executor.parameters)
    lines = script.splitlines()
    for expected in ("#SBATCH --partition=gpu", "#SBATCH --time=600", "#SBATCH --gpus-per-node=1",
                     "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G", "#SBATCH --array=0-44%4",
                     "#SBATCH --account=proj", "#SBATCH --qos=high", "#SBATCH --job-name=mddpm-benchmark"):
        assert expected in lines, expected
    assert f"#SBATCH --output={tmp_path / 'jobs'}/%A_%a_0_log.out" in lines
    assert lines[-1].endswith("python -m submitit.core._submit JOBS")
    with pytest.raises(MddpmError, match="expected one of inline, local, slurm"):
        make_executor("pbs", tmp_path, options)


def test_slurm_dry_run_writes_the_script_and_submits_nothing(tmp_path, phantom_dataset, fake_stages, monkeypatch,
                                                            capsys):
    """--executor slurm --dry-run: no cluster needed (no srun or sbatch on PATH), nothing is run or submitted,
    and the job-array script holds the requested #SBATCH lines and one command per pending run."""
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))
    experiment, out = write_experiment(tmp_path), tmp_path / "out"
    assert main(["benchmark", str(experiment), "--out", str(out), "--data", f"phantom={phantom_dataset}",
                 "--dry-run", "--executor", "slurm", "--partition", "gpu", "--time-min", "90", "--mem", "16G",
                 "--cpus-per-job", "4", "--array-parallelism", "2", "--sbatch", "account=proj",
                 "--jobs-dir", str(tmp_path / "jobs")]) == 0
    printed = capsys.readouterr().out
    script = tmp_path / "jobs" / "dry-run.sbatch"
    assert f"(nothing submitted): {script}" in printed
    assert fake_stages == [] and not (out / "runs").exists() and not (out / "benchmark.json").exists()
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == ["dry-run.sbatch"]  # no pickles: nothing sent
    lines = script.read_text().splitlines()
    for expected in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --mem=16G", "#SBATCH --cpus-per-task=4",
                     "#SBATCH --gpus-per-node=1", "#SBATCH --array=0-3%2", "#SBATCH --account=proj",
                     "#SBATCH --job-name=mddpm-benchmark"):
        assert expected in lines, expected
    text = script.read_text()
    for i, (method, run) in enumerate((m, r) for m in ("intensity", "vae") for r in ("seed1", "seed2")):
        assert f"    {i}) # phantom/{method}/{run}" in text
        case = lines[lines.index(f"    {i}) # phantom/{method}/{run}") + 1]
        assert "run_job" in case and f'\\"method\\": \\"{method}\\"' in case and f'\\"run\\": \\"{run}\\"' in case
    assert lines[-1].endswith('-c "$MDDPM_JOB"') and lines[-1].startswith("srun ")
    # the task command is runnable as written: bash parses the script
    assert subprocess.run(["/bin/bash", "-n", str(script)]).returncode == 0


def test_side_by_side_local_jobs_share_the_cpus(tmp_path, phantom_dataset, fake_stages, monkeypatch):
    """Local jobs split this machine's CPUs among the jobs that run at once; --cpus-per-job wins; a job
    applies its share to torch and to the evaluation kernels (OMP_NUM_THREADS)."""
    monkeypatch.setattr("mddpm.benchmark.cluster.usable_cpus", lambda: 16)
    assert job_threads("local", ClusterOptions()) == 16
    assert job_threads("local", ClusterOptions(array_parallelism=3)) == 5
    assert job_threads("local", ClusterOptions(array_parallelism=32)) == 1
    assert job_threads("local", ClusterOptions(array_parallelism=4, cpus_per_job=2)) == 2
    assert job_threads("slurm", ClusterOptions(cpus_per_job=8)) == 8
    assert job_threads("slurm", ClusterOptions()) is None
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # restored after the test
    experiment = write_experiment(tmp_path)
    try:
        rows = run_job(str(experiment), str(tmp_path / "out"), "phantom", str(phantom_dataset), "vae", "seed1", "cpu",
                       resume=True, force=False, threads=1)
        assert torch.get_num_threads() == 1 and usable_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert {(m, r) for m, r, _, _ in fake_stages} == {("vae", "seed1")} and len(rows) == 5


@pytest.mark.slow
def test_failed_local_job_names_its_log(tmp_path, phantom_dataset):
    """A job that fails in its own process (here: a file stands where its run folder should be) is reported
    with its log files, and the launcher exits with an error (slow: a job process, ~10 s)."""
    experiment = write_experiment(tmp_path, methods=["intensity"], runs={"seeds": [5]})
    out = tmp_path / "out"
    (out / "runs/phantom/intensity").mkdir(parents=True)
    (out / "runs/phantom/intensity/seed5").write_text("not a folder")
    messages = []
    with pytest.raises(MddpmError, match=r"1 of 1 runs failed \(phantom/intensity/seed5\)"):
        run_benchmark(experiment, out=out, data={"phantom": str(phantom_dataset)}, report=False, device="cpu",
                      executor="local", cluster=ClusterOptions(jobs_dir=tmp_path / "jobs"), log=messages.append)
    failed = [m for m in messages if "failed:" in m]
    assert len(failed) == 1 and "phantom/intensity/seed5" in failed[0]
    log_file = Path(failed[0].rsplit("logs: ", 1)[1].split(" and ")[1])
    assert log_file.is_file() and log_file.parent == tmp_path / "jobs"
    assert "seed5: exists and is not a folder" in log_file.read_text()  # the run lock's one-line refusal


@pytest.mark.slow
def test_local_executor_gives_the_inline_table(tmp_path, phantom_dataset):
    """Real stages (intensity, one seed) through submitit's LocalExecutor, in a process of its own, against
    the in-process executor on the same run (slow: a process of its own imports torch and Lightning)."""
    experiment = write_experiment(tmp_path, methods=["intensity"], runs={"seeds": [5]})
    data = {"phantom": str(phantom_dataset)}
    inline, _ = _run(experiment, tmp_path / "inline", data, progress=False)
    local, messages = _run(experiment, tmp_path / "local", data, progress=False, executor="local")
    started = [m for m in messages if m.startswith("started phantom/intensity/seed5 as local job")]
    threads = usable_cpus()  # one job at a time: every CPU
    assert len(started) == 1 and f"({threads} CPU thread" in started[0]
    assert [r["status"] for r in local["stages"]] == ["ran"] * 5
    job_log = Path(started[0].rsplit("log ", 1)[1])
    assert job_log.parent.parent == tmp_path / "local/jobs"
    assert "[1/5] phantom intensity seed5 train" in job_log.read_text()
    # Table 1 (every cell: mean, std, p-values); the wall times and creation date differ
    assert local["table"]["rows"] == inline["table"]["rows"] and local["table"]["columns"] == inline["table"]["columns"]
    a, b = (json.loads((tmp_path / f"{o}/runs/phantom/intensity/seed5/eval/blob/metrics.json").read_text())
            for o in ("inline", "local"))
    assert a["cases"] == b["cases"] and a["thresholds"] == b["thresholds"]
    again, messages = _run(experiment, tmp_path / "local", data, progress=False, executor="local")
    assert {r["status"] for r in again["stages"]} == {"skipped"} and not any("started" in m for m in messages)
