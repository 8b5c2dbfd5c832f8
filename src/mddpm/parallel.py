"""One parallel map for the per-case loops (synth, prepare, preprocess), an ordered thread map for the
evaluation's GIL-free work (:func:`threaded_map`), and how interrupts end a command.

:func:`parallel_map` runs a picklable function over jobs in spawned worker processes (no fork of a
process that may hold torch or ITK threads) under the progress bar of :mod:`mddpm.progress`, and hands
each result to the caller in the calling process as it arrives. Its teardown is the point: on Ctrl-C,
SIGTERM or any exception the workers are terminated and joined before the exception leaves, so that the
caller's ``finally`` (which removes its temporary folder) runs after the last worker has stopped writing
into it. Workers ignore SIGINT (the terminal sends it to the whole process group; the parent decides) and
exit by themselves when their parent dies without a chance to clean up (SIGKILL); a worker stopped with
SIGTERM in the middle of a job first unwinds it, so that the job's own ``finally`` blocks (an atomic write's
temporary file) run, and is killed if that takes more than :data:`JOIN_SECONDS`.

SIGTERM is turned into :class:`~mddpm.errors.Terminated` (a ``KeyboardInterrupt``) while :func:`sigterm_raises` is
active, so that ``finally`` blocks run on SIGTERM as on Ctrl-C: the command line wraps every command in
it, and the map and the steps that hold a temporary folder use it too (for callers of the Python API).
Training leaves SIGTERM to Lightning (:func:`default_sigterm`), which saves a checkpoint to resume from.
"""

from __future__ import annotations

import ast
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from mddpm.errors import MddpmError, Terminated
from mddpm.messages import note
from mddpm.progress import progress_bar

PARENT_CHECK_SECONDS = 1.0  # how often a worker checks that its parent is still alive
JOIN_SECONDS = 5.0  # after SIGTERM, how long a worker may take before it is killed
MAX_THREADS = 8  # threads of the compiled evaluation kernels at most


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which SLURM and taskset narrow)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def usable_threads() -> int:
    """Threads for the GIL-free evaluation kernels: ``OMP_NUM_THREADS`` when set, else the CPUs this
    process may run on, at most :data:`MAX_THREADS`."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), MAX_THREADS)
    return min(usable_cpus(), MAX_THREADS)


def threaded_map(fn: Callable[[Any], Any], items: Iterable, threads: int) -> Iterator:
    """``fn(item)`` for every item, yielded in order, computed by ``threads`` threads at most
    ``2 * threads`` items ahead (memory stays bounded). For work that releases the GIL (NIfTI
    decompression, the compiled median); an exception is raised where its item is yielded, and the
    items not started are dropped."""
    if threads <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(threads)
    try:
        todo, pending = iter(items), deque()
        for item in todo:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * threads:
                break
        while pending:
            result = pending.popleft().result()
            for item in todo:
                pending.append(pool.submit(fn, item))
                break
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` in the main thread (a no-op elsewhere, or when
    another handler is installed); the earlier handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _WorkerStop(BaseException):
    """SIGTERM inside a job of a worker: unwinds the job (its ``finally`` blocks remove its temporary files)."""


_in_job = False


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def default_sigterm() -> Iterator[None]:
    """Within the block SIGTERM has its default handler (Lightning installs its own only over the default:
    training saves ``last.ckpt`` and stops cleanly); the earlier handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    earlier = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, earlier)


def _start_worker(parent: int, initializer: Callable | None, initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_sigterm)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked since the parent launched this worker
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


def _worker_sigterm(signum, frame) -> None:
    if _in_job:
        raise _WorkerStop()
    os._exit(128 + signum)  # idle: nothing to clean up


def _run_in_worker(fn: Callable[[Any], Any], job) -> Any:
    global _in_job
    _in_job = True
    try:
        return fn(job)
    except _WorkerStop:
        os._exit(128 + signal.SIGTERM)  # the job has unwound; the pool must not hand this worker another
    finally:
        _in_job = False


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def parallel_map(fn: Callable[[Any], Any], jobs: Sequence, done: Callable[[int, Any], None], *, workers: int,
                 description: str, progress: bool = True, initializer: Callable | None = None,
                 initargs: tuple = (), label: Callable[[Any], str] | None = None,
                 on_error: Callable[[int, Exception], None] | None = None) -> None:
    """Call ``done(i, fn(jobs[i]))`` for every job, in the calling process, in order of completion.

    ``workers`` > 1: that many spawned processes, each first running ``initializer(*initargs)``
    (``fn``, the jobs and the results are pickled); otherwise, or when the main script lacks the
    ``if __name__ == "__main__":`` guard spawned workers need (:func:`unguarded_script`; a note says so),
    ``fn`` runs here, in job order, and the initializer is not called. An exception raised by ``fn`` goes
    to ``on_error(i, exception)`` and the map goes on; without ``on_error`` it is raised here once the
    workers are stopped. ``label(job)`` is shown beside the bar as each job finishes.
    """
    workers = max(1, min(workers, len(jobs)))
    script = unguarded_script() if workers > 1 else None
    if script is not None:  # each spawned worker would run the script again (and start workers of its own)
        note(f"{description}: note: running in this process, not in {workers} workers: {script} has no "
             "`if __name__ == \"__main__\":` block, which worker processes need")
        workers = 1
    with sigterm_raises(), progress_bar(description, len(jobs), progress and bool(jobs)) as advance:
        if workers == 1:
            for i, job in enumerate(jobs):
                try:
                    result = fn(job)
                except Exception as e:
                    if on_error is None:
                        raise
                    on_error(i, e)
                else:
                    done(i, result)
                advance(label(job) if label else "")
            return
        with _pool(workers, initializer, initargs) as pool:
            # the workers start during the first submits: a signal now would cut the pickled start-up data a
            # worker is reading (a traceback from it), so it waits; workers inherit the mask until started
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
            try:
                pending = {pool.submit(_run_in_worker, fn, job): i for i, job in enumerate(jobs)}
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = pending.pop(future)
                    error = future.exception()
                    if error is None:
                        done(i, future.result())
                    elif _pool_broken(error):
                        raise MddpmError(f"{description}: a worker process died while running job {i + 1} of "
                                         f"{len(jobs)}: out of memory (try fewer workers), or started by code "
                                         "outside the script's `if __name__ == \"__main__\":` block (move it there, "
                                         "or use workers=1)") from None
                    elif on_error is not None and isinstance(error, Exception):
                        on_error(i, error)
                    else:
                        raise error
                    advance(label(jobs[i]) if label else "")


def unguarded_script() -> str | None:
    """The main script's path when spawned workers would run its top-level code again (no top-level
    ``if __name__ == "__main__":`` block); None for a guarded script, ``python -c``, a notebook or the prompt."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path:
        return None
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return None  # not Python source (a frozen or compiled main): left to spawn
    return None if any(_is_main_guard(node) for node in tree.body) else str(path)


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    sides = [node.test.left, *node.test.comparators]
    return any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides) and \
        any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)


def _pool_broken(error: BaseException) -> bool:
    from concurrent.futures.process import BrokenProcessPool

    return isinstance(error, BrokenProcessPool)


@contextlib.contextmanager
def _pool(workers: int, initializer: Callable | None, initargs: tuple) -> Iterator[ProcessPoolExecutor]:
    """A spawned pool; on any exception (Ctrl-C and SIGTERM included) its workers are terminated and joined."""
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                               initargs=(os.getpid(), initializer, initargs))
    try:
        yield pool
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started, terminate the running workers (SIGTERM, then SIGKILL) and join them.
    (Python 3.14 has ``ProcessPoolExecutor.terminate_workers``; before it the process table is private.)"""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        with contextlib.suppress(Exception):
            p.terminate()
    deadline = time.monotonic() + JOIN_SECONDS
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
