"""One lock file per benchmark run, so that two launchers, or a launcher and a cluster job, never train,
predict or evaluate the same run at the same time.

The lock is ``RUN/lock``, created atomically (``O_CREAT | O_EXCL``, which NFS v3+ and Lustre honour) and
holding ``{"host", "pid", "started", "job"}``. It is removed when the run's stages end, also on an error.
Stale-lock rule: a lock is stale, and taken over with a note, when it was written on *this* host by a
process that no longer exists, or by a SLURM job that ``squeue`` (when on PATH) no longer lists (a job
killed at its time limit, say). Any other lock from another host is never judged stale (its process
cannot be checked from here): delete the file by hand once that process is known to be gone.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Callable

from mddpm.benchmark.plan import now_iso
from mddpm.errors import MddpmError

LOCK_NAME = "lock"


class RunLocked(MddpmError):
    """The run is being worked on by another process."""


def read_lock(path: Path) -> dict | None:
    """The holder recorded in a lock file (None if there is no lock; ``{}`` if it is unreadable)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def is_stale(holder: dict) -> bool:
    """A lock whose process (this host) or SLURM job (``squeue``) is gone; see the module docstring."""
    if holder.get("host") != socket.gethostname():
        return bool(holder.get("slurm_job")) and _slurm_job_gone(str(holder["slurm_job"]))
    if not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _slurm_job_gone(job_id: str) -> bool:
    """True when ``squeue`` no longer lists the job (False when it cannot tell)."""
    if shutil.which("squeue") is None:
        return False
    try:
        done = subprocess.run(["squeue", "-h", "-o", "%i", "-j", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if done.returncode == 0:
        return done.stdout.strip() == ""
    return "invalid job id" in done.stderr.lower()


def describe(path: Path, holder: dict) -> str:
    """One line naming the locked run and its holder."""
    who = (f"{holder.get('host', '?')} pid {holder.get('pid', '?')} since {holder.get('started', '?')}"
           + (f" (job {holder['job']})" if holder.get("job") else "")) if holder else "an unreadable lock"
    return f"{path.parent}: locked by {who}; delete {path} if that process is gone"


class RunLock:
    """``with RunLock(run_root): ...`` holds ``run_root/lock`` or raises :class:`RunLocked`."""

    def __init__(self, run_root: Path, log: Callable[[str], None] | None = None):
        self.path = Path(run_root) / LOCK_NAME
        self.log = log or (lambda msg: None)
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": now_iso(),
                       "job": os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID"),
                       "slurm_job": os.environ.get("SLURM_JOB_ID")}

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_lock(self.path)
                if holder is None:  # released in between
                    continue
                if is_stale(holder):
                    self.log(f"note: {describe(self.path, holder).split(';')[0]}, a process or job that is gone: "
                             "taking the lock over")
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunLocked(describe(self.path, holder)) from None
            with os.fdopen(fd, "w") as f:
                json.dump(self.holder, f)
            return self
        raise RunLocked(describe(self.path, read_lock(self.path) or {}))

    def __exit__(self, *exc) -> None:
        if read_lock(self.path) == self.holder:  # never remove another process's lock
            self.path.unlink(missing_ok=True)

