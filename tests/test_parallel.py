"""mddpm.parallel: results, errors, and the teardown on SIGTERM / Ctrl-C (real signals sent to subprocesses)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mddpm.cli import main as cli_main
from mddpm.parallel import parallel_map, threaded_map, usable_threads

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.parametrize("workers", [1, 2])
def test_results_reach_the_caller_and_errors_follow_the_rule(workers):
    got, errors = {}, {}
    parallel_map(math.sqrt, [4.0, -1.0, 9.0], got.__setitem__, workers=workers, description="t", progress=False,
                 on_error=lambda i, e: errors.__setitem__(i, type(e)))
    assert got == {0: 2.0, 2: 3.0} and errors == {1: ValueError}
    with pytest.raises(ValueError, match="math domain error"):  # without on_error the first error is raised
        parallel_map(math.sqrt, [4.0, -1.0], lambda i, r: None, workers=workers, description="t", progress=False)


def _children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except (OSError, ValueError):
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


def _as_from_a_terminal() -> None:
    """In the child before it starts: SIGINT at its default, as a command typed in a terminal has it. A
    background job of a non-interactive shell (``make test &``) inherits SIGINT ignored, and Python then
    installs no Ctrl-C handler, so a Ctrl-C test would wait for nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# a command-like script: a temporary folder that its `finally` removes, a pool of workers that would each
# run for a minute, and the command line's way of reporting an interrupt
SCRIPT = textwrap.dedent("""
    import shutil, sys, tempfile, time
    from mddpm.errors import Terminated
    from mddpm.parallel import parallel_map, sigterm_raises
    if __name__ == "__main__":
        try:
            with sigterm_raises():
                tmp = tempfile.mkdtemp(prefix=".job.", suffix=".tmp", dir=sys.argv[1])
                try:
                    parallel_map(time.sleep, [60.0] * 3, lambda i, r: None, workers=2, description="t", progress=False)
                finally:
                    shutil.rmtree(tmp)
        except KeyboardInterrupt as e:
            print("stopped by SIGTERM" if isinstance(e, Terminated) else "interrupted", file=sys.stderr)
            sys.exit(143 if isinstance(e, Terminated) else 130)
""")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc to list child processes")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_workers_and_removes_the_temporary_folder(tmp_path, sig):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(work)], env=env, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # its own process group: Ctrl-C reaches the workers too
                            preexec_fn=_as_from_a_terminal)
    deadline = time.monotonic() + 60
    while len([p for p in _children(proc.pid) if _alive(p)]) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    children = _children(proc.pid)
    assert len(children) >= 2, "the workers did not start"
    assert list(work.iterdir()), "the temporary folder was not made"
    time.sleep(0.5)  # the workers are inside their jobs
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # what a terminal's Ctrl-C does
    else:
        proc.send_signal(sig)  # what `kill` or a scheduler does: the parent only
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err
    assert err.strip().splitlines() == ["stopped by SIGTERM" if sig == signal.SIGTERM else "interrupted"]
    assert not list(work.iterdir()), "temporary folder left behind"
    deadline = time.monotonic() + 10
    while any(map(_alive, children)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in children if _alive(p)], "orphaned worker processes"


def test_ctrl_c_during_start_up_is_one_line(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "build_parser", interrupted)
    assert cli_main.main(["verify", "x"]) == 130
    assert capsys.readouterr().err.splitlines() == ["mddpm: interrupted"]


def _interrupt_command(argv: list[str], folder: Path, sig: int) -> tuple[int, str, list[int]]:
    """Run ``mddpm ARGV`` in its own process group, send ``sig`` once its workers run (to the group for
    SIGINT, as a terminal does; to the command for SIGTERM); return (exit code, stderr, worker pids)."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mddpm.cli.main", *argv], env=env, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=_as_from_a_terminal)
    deadline = time.monotonic() + 120
    while len([p for p in _children(proc.pid) if _alive(p)]) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    children = _children(proc.pid)
    assert len(children) >= 2 and proc.poll() is None, "the workers did not start (or the command ended first)"
    time.sleep(1.0)
    os.killpg(proc.pid, sig) if sig == signal.SIGINT else proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while any(map(_alive, children)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return proc.returncode, err, [p for p in children if _alive(p)]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc to list child processes")
def test_sigterm_during_synth_leaves_no_temporary_folder_and_no_worker(tmp_path):
    code, err, alive = _interrupt_command(["synth", str(tmp_path / "synth"), "--size", "small", "--workers", "2",
                                           "--no-progress"], tmp_path, signal.SIGTERM)
    assert (code, err.strip().splitlines()) == (143, ["mddpm synth: stopped by SIGTERM"])
    assert not alive and not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc to list child processes")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_prepare_leaves_no_temporary_folder_and_no_worker(tmp_path, sig):
    from mddpm.data.synth.phantom import make_phantom_dataset

    dataset = make_phantom_dataset(tmp_path / "phantom", shape=(96, 96, 48), n_healthy=24, n_anomalous=2)
    code, err, alive = _interrupt_command(["prepare", str(dataset), "--grid", "paper", "--workers", "2",
                                           "--no-progress"], tmp_path, sig)
    stopped = "stopped by SIGTERM" if sig == signal.SIGTERM else "interrupted"
    assert (code, err.strip().splitlines()) == (143 if sig == signal.SIGTERM else 130, [f"mddpm prepare: {stopped}"])
    assert not alive and not list((dataset / "prepared").glob("*")), "a worker or a temporary folder left"


def test_sigterm_at_any_moment_of_a_command_is_one_line():
    """Outside any pool or temporary folder too (here: inside a command's body)."""
    code = ("import os, signal, sys, time; import mddpm.cli.list as command; "
            "command.run = lambda args: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(30)); "
            "from mddpm.cli.main import main; sys.exit(main(['list', 'methods']))")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(SRC)},
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr.splitlines()) == (143, ["mddpm list: stopped by SIGTERM"])


@pytest.mark.parametrize("threads", [1, 3])
def test_threaded_map_keeps_order_stays_bounded_and_raises_at_the_item(threads):
    started = []

    def slow_square(i):
        started.append(i)
        time.sleep(0.01 * ((7 * i) % 3))  # finishing out of order
        if i == 5:
            raise ValueError("item 5")
        return i * i

    results = threaded_map(slow_square, range(1000), threads)
    assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]
    assert len(started) <= 5 + 2 * threads  # never more than 2 x threads items ahead of the caller
    with pytest.raises(ValueError, match="item 5"):
        next(results)
    assert max(started) < 5 + 2 * threads + 1  # the items not started were dropped


def test_usable_threads_follows_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert usable_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert 1 <= usable_threads() <= 8


HELPER = """
import os


def pid(job):
    return os.getpid()


def die(job):
    os._exit(3)
"""
MAP = """
import os
from helper import pid
from mddpm.parallel import parallel_map
seen = set()
parallel_map(pid, [1, 2, 3, 4], lambda i, p: seen.add(p), workers=2, description="job", progress=False)
print("in this process" if seen == {os.getpid()} else "in workers")
"""


def _run_script(folder: Path, body: str) -> subprocess.CompletedProcess:
    (folder / "helper.py").write_text(HELPER)
    (folder / "script.py").write_text(body)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(SRC)])}
    return subprocess.run([sys.executable, "script.py"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_script_without_the_main_guard_maps_in_process_with_a_note(tmp_path):
    """Spawned workers would run an unguarded script's top-level code again: the map runs in process."""
    done = _run_script(tmp_path, MAP)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "in this process"
    assert 'job: note: running in this process, not in 2 workers' in done.stderr
    assert 'script.py has no `if __name__ == "__main__":` block' in done.stderr


def test_a_guarded_script_still_maps_in_worker_processes(tmp_path):
    guarded = "if __name__ == '__main__':\n" + textwrap.indent(MAP, "    ")
    done = _run_script(tmp_path, guarded)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "in workers" and "note" not in done.stderr


def test_a_dead_worker_names_both_causes(tmp_path):
    body = ("if __name__ == '__main__':\n    from helper import die\n    from mddpm.parallel import parallel_map\n"
            "    parallel_map(die, [1, 2], lambda i, r: None, workers=2, description='job', progress=False)\n")
    done = _run_script(tmp_path, body)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "job: a worker process died while running job" in last and "out of memory (try fewer workers)" in last
    assert '`if __name__ == "__main__":` block' in last and "workers=1" in last
