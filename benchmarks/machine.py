"""The machine a measurement ran on (CPU, cores, memory, load, versions, device, git commit): the one
helper of every script in ``benchmarks/``, so each results file says where its numbers come from."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) of GPUs we know, matched by name.
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """Short commit of the checkout, with ``-dirty`` when tracked files under ``src/`` changed; None outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=REPO)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src"],
                               capture_output=True, text=True, timeout=10, cwd=REPO)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def bf16_peak_tflops(device) -> float | None:
    """The dense bf16 peak of a known GPU (TFLOP/s), else None."""
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def machine() -> dict:
    """CPU model, cores (all and usable), memory, load average and Python version; imports no torch (the
    memory benchmark's parent process must stay light)."""
    try:
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem_kb = None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "memory_gib": None if mem_kb is None else mem_kb / 2**20, "load_average_start": list(os.getloadavg()),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "python": platform.python_version(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def machine_info(device=None) -> dict:
    """:func:`machine` plus torch, numpy and mddpm versions, torch threads, the GPUs, the torch ``device``
    (default CPU) with its name and bf16 peak, and the git commit."""
    import numpy as np
    import torch

    from mddpm import __version__

    device = torch.device("cpu") if device is None else torch.device(device)
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else []
    return {**machine(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "numpy": np.__version__,
            "mddpm": __version__, "gpus": gpus, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
            "bf16_peak_tflops": bf16_peak_tflops(device), "git_commit": git_commit()}


def markdown_header(title: str, info: dict, command: str) -> list[str]:
    """The opening lines of a results file (``info`` from :func:`machine_info`): what ran where, and how
    loaded the machine was."""
    gpus = f"; GPUs: {', '.join(info['gpus'])}" if info.get("gpus") else ""
    return [f"# {title}", "", f"- command: `{command}`",
            f"- machine: {info['cpu']}, {info['cores']} cores; torch {info['torch']} ({info['torch_threads']} "
            "threads), "
            f"numpy {info['numpy']}, Python {info['python']}{gpus}",
            f"- commit: {info['git_commit']}; started {info['started']}",
            f"- load average (1/5/15 min) at start {info['load_average_start']}, "
            f"at end {info.get('load_average_end')}", *_provisional(info), ""]


def write_results(result: dict, info: dict, out: Path, markdown, start: float) -> None:
    """Stamp the end (load average, ``wall_s`` since ``start``, a ``time.perf_counter()``), write
    ``out``.json and ``out``.md (``markdown(result)``: its text), and print the Markdown."""
    info["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    result["wall_s"] = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def _provisional(info: dict) -> list[str]:
    """A warning line when the 1-minute load average exceeded half the cores at start or end."""
    loads = [info["load_average_start"][0], (info.get("load_average_end") or [0])[0]]
    if max(loads) <= info["cores"] / 2:
        return []
    return [f"- **provisional**: the machine was busy (1-minute load up to {max(loads):.1f} on {info['cores']} "
            "cores); rerun on a quiet machine before quoting these figures"]
