"""One writer per output folder: every command that writes a folder (train, predict, evaluate, detect,
demo, preprocess, import-pddpm, and each run of a benchmark) holds ``FOLDER/.mddpm.lock`` while it works.

The lock is created atomically (``O_CREAT | O_EXCL``, which NFS v3+ and Lustre honour) and holds
``{"host", "pid", "started", "job"}``. It is removed when the command ends, also on an error; a folder the
lock itself created is removed too when nothing else was written into it. A second writer gets a one-line
:class:`FolderLocked` (exit code 2 on the command line).

Stale-lock rule: a lock is stale, and taken over with a note, when it was written on *this* host by a process
that no longer exists, or by a SLURM job that ``squeue`` (when on PATH) no longer lists (a job killed at its
time limit, say). Any other lock from another host is never judged stale (its process cannot be checked from
here): delete the file by hand once that process is known to be gone.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import inspect
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Callable

from mddpm.errors import MddpmError
from mddpm.messages import note

LOCK_NAME = ".mddpm.lock"


class FolderLocked(MddpmError):
    """The folder is being written by another process."""


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
    return isinstance(holder.get("pid"), int) and not process_alive(holder["pid"])


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine exists (another user's counts; so does an unknown answer)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


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
    """One line naming the locked folder and its holder."""
    who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} (started at {holder.get('started', '?')}"
           + (f", job {holder['job']})" if holder.get("job") else ")")) if holder else "a process (unreadable lock)"
    return f"{path.parent}: in use by {who}; if that process is gone, delete {path}"


class FolderLock:
    """``with FolderLock(folder): ...`` holds ``folder/.mddpm.lock`` or raises :class:`FolderLocked`;
    ``log`` gets the note of a stale lock taken over (default: stderr)."""

    def __init__(self, folder: str | os.PathLike, log: Callable[[str], None] | None = None):
        self.path = Path(folder).absolute() / LOCK_NAME
        self.log = log or note
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(),
                       "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                       "job": os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID"),
                       "slurm_job": os.environ.get("SLURM_JOB_ID")}
        self.created_folder = False

    def __enter__(self) -> "FolderLock":
        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            raise MddpmError(f"{folder}: exists and is not a folder")
        self.created_folder = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MddpmError(f"{folder}: cannot create folder ({e.strerror})") from None
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_lock(self.path)
                if holder is None:  # released in between
                    continue
                if is_stale(holder):
                    self.log(f"note: {describe(self.path, holder).split(';')[0]}, a process or job that is gone: "
                             "taking its lock over")
                    self.path.unlink(missing_ok=True)
                    continue
                self._remove_created_folder()
                raise FolderLocked(describe(self.path, holder)) from None
            with os.fdopen(fd, "w") as f:
                json.dump(self.holder, f)
            return self
        self._remove_created_folder()
        raise FolderLocked(describe(self.path, read_lock(self.path) or {}))

    def __exit__(self, *exc) -> None:
        if read_lock(self.path) == self.holder:  # never remove another process's lock
            self.path.unlink(missing_ok=True)
        self._remove_created_folder()

    def _remove_created_folder(self) -> None:
        if self.created_folder:
            with contextlib.suppress(OSError):  # not empty: the command wrote into it
                self.path.parent.rmdir()


def refuse_input_as_output(out: str | os.PathLike, inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse an output folder that is one of the command's input folders (``{what: path}``; files are not
    checked) or holds one: writing there, or clearing it with ``--force``, would change the input."""
    out = Path(out).resolve()
    for what, path in inputs.items():
        source = None if path is None else Path(path).resolve()
        if source is not None and source.is_dir() and (out == source or out in source.parents):
            raise MddpmError(f"{out}: is {'the' if out == source else 'a folder above the'} {what} this command "
                             f"reads ({path}); choose another output folder")


def writes_folder(param: str = "out", inputs: tuple[str, ...] = ()):
    """Decorator: the function runs holding the lock of the folder its argument ``param`` names (no lock
    when that argument is None), after refusing a folder that is, or holds, one of its arguments ``inputs``."""
    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args, **kwargs):
            bound = signature.bind(*args, **kwargs).arguments
            folder = bound.get(param)
            if folder is None:
                return fn(*args, **kwargs)
            refuse_input_as_output(folder, {name.replace("_", " "): bound.get(name) for name in inputs})
            with FolderLock(folder):
                return fn(*args, **kwargs)
        return locked
    return decorate
