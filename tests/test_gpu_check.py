"""benchmarks/gpu_check.py --dry-run: every stage of the GPU check runs on the CPU at tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def dry_run(tmp_path: Path, *stages: str) -> dict:
    out = tmp_path / "gpu_check"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    args = ["--stages", *stages] if stages else []
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out), *args],
                          capture_output=True, text=True,
                          env={**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["dry_run"] and "DRY RUN" in out.with_suffix(".md").read_text()
    assert not [name for name, r in result["stages"].items() if "error" in r]
    return result


def test_dry_run_measures_training_predict_postprocess_and_threshold(tmp_path):
    result = dry_run(tmp_path, "train", "predict", "postprocess")
    train, post = result["stages"]["train"], result["stages"]["postprocess"]
    for precision in ("32", "bf16"):
        assert train[precision]["slices_per_s"] > 0 and train[precision]["tflops"] > 0
        assert 0 < result["stages"]["predict"][precision]["seconds_per_volume"]
    assert post["bisection_s"] > 0 and post["exact_s"] > 0 and result["machine"]["cpu"]


@pytest.mark.slow
def test_dry_run_trains_through_lightning_and_compares_bf16_with_fp32(tmp_path):
    parity = dry_run(tmp_path, "lightning")["stages"]["lightning"]["parity"]
    assert set(parity) == {"auprc", "auroc", "dice_bisection", "dice_exact"}
    assert all(v["fp32"] is not None for v in parity.values())
