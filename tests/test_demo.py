"""mddpm demo: one method and one run through the benchmark engine, plus the preview."""

from __future__ import annotations

import json

import pytest

from mddpm.benchmark.experiment import load_experiment
from mddpm.benchmark.runner import run_benchmark
from mddpm.demo import demo_experiment, run_demo
from mddpm.errors import MddpmError


def test_the_demo_is_an_experiment_of_one_method_and_one_run(tmp_path):
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(demo_experiment("vae", "small", 4, ["train.max_steps=3", "train.seed=9"])))
    experiment = load_experiment(path)
    assert experiment.methods == ["vae"] and [r.seed for r in experiment.runs] == [9]
    assert experiment.overrides == {"vae": {"train.max_steps": 3}} and experiment.figures == 4
    # in family: tumour and MS-like lesions of the family it trains on; out of family: the other's tumours
    assert [(t.name, t.test, t.val) for t in experiment.datasets[0].test_sets] == [
        ("tumour", "tumour_test", "tumour_val"), ("ms", "ms_test", "ms_val"),
        ("varied-tumour", "varied_tumour_test", "varied_tumour_val")]
    assert experiment.datasets[0].synth == {"size": "small", "seed": 4, "family": "template",
                                            "test_families": ["varied"]}
    assert experiment.datasets[0].healthy_val == "val"
    other = demo_experiment("vae", "small", 4, family="varied")["datasets"][0]
    assert other["synth"]["family"] == "varied" and other["test_sets"][-1]["name"] == "template-tumour"
    assert experiment.thresholds == ["bisection", "exact"] and experiment.title.startswith("mddpm demo: vae")
    assert [r.seed for r in load_experiment(_write(tmp_path, demo_experiment("vae", "small", 0))).runs] == [3141]
    with pytest.raises(MddpmError, match="train.seed=x"):
        demo_experiment("vae", "small", 0, ["train.seed=x"])


def _write(tmp_path, experiment: dict):
    path = tmp_path / "other.json"
    path.write_text(json.dumps(experiment))
    return path


@pytest.mark.slow
def test_demo_end_to_end_then_resumed_as_a_benchmark(tmp_path):
    """The small synthetic dataset and the intensity method (no training); slow."""
    out = tmp_path / "out"
    result = run_demo(out, method="intensity", size="small", progress=False, log=lambda m: None)
    assert set(result["evaluations"]) == {"tumour", "ms", "varied-tumour"}
    for name in ("experiment.json", "preview.png", "report.html", "table.md", "data/synthetic/dataset.json"):
        assert (out / name).is_file(), name
    assert result["run"] == out / "runs/synthetic/intensity/seed3141/train"
    assert json.loads((result["run"] / "threshold.json").read_text())["val_split"] == "tumour_val"
    assert len(list((out / "runs/synthetic/intensity/seed3141/eval/tumour/figures").glob("*.png"))) == 2
    assert set(result["seconds"]) >= {"data", "train", "predict", "evaluate", "table and report"}
    again = run_benchmark(out / "experiment.json", out=out, progress=False, log=lambda m: None)
    assert {row["status"] for row in again["stages"]} == {"skipped"}
    with pytest.raises(MddpmError, match="already exists"):
        run_demo(out, method="intensity", size="small", progress=False, log=lambda m: None)
    run_demo(out, method="intensity", size="small", force=True, progress=False, log=lambda m: None)
    assert (out / "report.html").is_file()
