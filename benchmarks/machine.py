"""What a speed figure needs beside it: the machine, the software, the commit and the load."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what :mod:`platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The checked-out commit of this repository, ``-dirty`` when tracked files differ."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               cwd=REPO, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else None


def machine() -> dict:
    """CPU, cores, threads, library versions, GPU (if any), commit and the load average now."""
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "git_commit": git_commit(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()], "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def markdown_header(title: str, info: dict, command: str) -> list[str]:
    """The opening lines of a results file: what ran where, and how loaded the machine was."""
    return [f"# {title}", "", f"- command: `{command}`",
            f"- machine: {info['cpu']}, {info['cores']} cores; torch {info['torch']} ({info['torch_threads']} threads), "
            f"numpy {info['numpy']}, Python {info['python']}" + (f"; GPUs: {', '.join(info['gpus'])}" if info.get("gpus") else ""),
            f"- commit: {info['git_commit']}; started {info['started']}",
            f"- load average (1/5/15 min) at start {info['load_average_start']}, at end {info.get('load_average_end')}", ""]
