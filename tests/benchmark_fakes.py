"""Stand-ins for the benchmark tests: a minimal metrics.json, a small experiment file on the phantom dataset,
and the ``fake_stages`` fixture that replaces the real train/predict/evaluate (in this process only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mddpm.benchmark.execute as execute
from mddpm.benchmark.plan import expected_run_config
from mddpm.io import write_json


def metrics(dice: dict[str, float], auprc: dict[str, float], split: str = "lesion_test") -> dict:
    """A minimal metrics.json (as mddpm evaluate writes it) with per-case Dice and AUPRC."""
    cases = [{"case_id": cid, "lesion_voxels": 10, "auprc": auprc[cid], "auroc": 0.9, "oracle_dice_bisection": 0.9,
              "rules": {"bisection": {"dice": d}}} for cid, d in dice.items()]

    def stat(values):
        arr = np.asarray(list(values), dtype=np.float64)
        return {"mean": float(arr.mean()), "std": float(arr.std()), "n": int(arr.size)}

    return {"format": "mddpm-metrics", "format_version": 1, "default_rule": "bisection",
            "test": {"split": split, "cases": len(cases), "maps": "/nonexistent"},
            "thresholds": {"bisection": {"threshold": 0.3, "dice": 0.5}},
            "aggregate": {"auprc": stat(auprc.values()), "auroc": stat([0.9] * len(cases)),
                          "oracle_dice_bisection": stat([0.9] * len(cases)),
                          "rules": {"bisection": {"dice": stat(dice.values())}}},
            "cases": cases, "config": {"method": "x"}}


def experiment_dict(**changes) -> dict:
    experiment = {"name": "tiny", "preset": "demo", "methods": ["intensity", "vae"], "reference": "intensity",
            "runs": {"seeds": [1, 2]}, "thresholds": ["bisection"], "figures": 0,
            "datasets": [{"name": "phantom", "path": None, "healthy_val": "val",
                          "test_sets": [{"name": "blob", "test": "lesion_test", "val": "lesion_val"}]}]}
    experiment.update(changes)
    return experiment


@pytest.fixture
def fake_stages(monkeypatch):
    """Replace the real train/predict/evaluate by stand-ins that write the files the benchmark checks."""
    calls = []

    def fake_run_stage(stage, status, experiment, dataset_root, device, force, progress, log, loggers=()):
        calls.append((stage.method, stage.run.tag, stage.name, status))
        p = stage.paths
        if stage.kind == "train":
            cfg = expected_run_config(experiment, stage, dataset_root)
            write_json(p.train / "config.json", {**cfg, "mddpm_version": "0", "prepared": "/cache"})
            (p.train / "best.pt").write_bytes(f"weights {stage.method} {stage.run.tag}".encode())
        elif stage.kind == "predict":
            write_json(p.maps(stage.split) / "predict.json", {"split": stage.split, "call": len(calls)})
        else:
            value = 0.6 if stage.method == "intensity" else 0.4
            write_json(p.eval(stage.test_set) / "metrics.json",
                       metrics({"c1": value, "c2": value + 0.1}, {"c1": value, "c2": value}))

    monkeypatch.setattr(execute, "run_stage", fake_run_stage)
    return calls


def write_experiment(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(experiment_dict(**changes)))
    return path
