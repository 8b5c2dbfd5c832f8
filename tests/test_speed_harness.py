"""Smoke tests of the speed harness (benchmarks/speed.py) at tiny sizes (no timing assertions)."""

import json
import math

import pytest
import torch

from speed import main, run_bench, to_markdown  # benchmarks/ is on pytest's pythonpath (pyproject.toml)
from speed_model import BenchSettings, synthetic_maps, time_call
from speed_scoring import bench_bf16_parity

TINY_NET = ("model.net.model_channels=8", "model.net.head_channels=8", "model.net.groups=4")


def tiny_settings(**changes) -> BenchSettings:
    base = dict(device="cpu", presets=("demo",), batch={"demo": 2}, predict_slices={"demo": 2}, repeats=1,
                warmup=0, overrides=TINY_NET, noise_size=32, noise_batch=3, volume_shape=(12, 32, 32),
                pooled_volumes=3, parity_volumes=1)
    return BenchSettings(**{**base, **changes})


def test_time_call_runs_warmup_then_repeats():
    calls = []
    timing = time_call(lambda: calls.append(1), torch.device("cpu"), repeats=3, warmup=2)
    assert len(calls) == 5
    assert timing["repeats"] == 3 and 0 <= timing["min_s"] <= timing["median_s"]


def test_synthetic_maps_look_like_predicted_maps():
    gen = torch.Generator().manual_seed(0)
    maps, masks, labels = synthetic_maps(2, (6, 16, 16), gen, torch.device("cpu"))
    assert maps.shape == masks.shape == labels.shape == (2, 6, 16, 16)
    assert (maps[masks == 0] == 0).all() and (maps >= 0).all()
    assert labels.sum() > 0 and (labels <= masks).all()


def test_run_bench_noise_masking_tiny():
    results = run_bench(tiny_settings(), stages=("noise_masking",), say=lambda _: None)
    timings = results["stages"]["noise_masking"]["result"]["timings"]
    assert set(timings) == {"simplex_one_field", "simplex_batch_independent", "masking_released", "masking_fpmcm"}
    assert all(v["median_s"] > 0 for v in timings.values())
    assert timings["masking_released"]["published_s"] == 0.0135
    assert "## Noise and masking (32×32, batch 3)" in to_markdown(results)


@pytest.mark.slow
def test_run_bench_all_stages_tiny():
    results = run_bench(tiny_settings(), say=lambda _: None)
    st = results["stages"]
    assert set(st) == {"noise_masking", "train", "predict", "postprocess", "threshold", "bf16_parity"}
    train = st["train"]["result"]["demo"]
    assert set(train["steps"]) == {f"{n}/{p}" for n in ("bare_net", "mddpm-released", "mddpm-fpmcm")
                                   for p in ("32", "bf16")}
    assert all(v["median_s"] > 0 and v["tflops"] > 0 for v in train["steps"].values())
    assert train["batch"] == 2
    pred = st["predict"]["result"]["demo"]
    assert pred["slices_timed"] == 2 and pred["boxes"] == 4 and pred["forwards_per_volume"] == 25 * 4
    post = st["postprocess"]["result"]
    assert post["check"]["median_equal_scipy"]
    assert math.isclose(post["check"]["ap"], post["check"]["ap_sklearn"], rel_tol=1e-9)
    assert math.isclose(post["check"]["auroc"], post["check"]["auroc_sklearn"], rel_tol=1e-9)
    thr = st["threshold"]["result"]
    assert thr["voxels"] == 3 * 12 * 32 * 32 and thr["same_threshold_as_reference"]
    parity = st["bf16_parity"]["result"]
    assert "randomly initialised" in parity["source"] and parity["sets"]["synthetic"]["volumes"] == 1
    assert 0 <= parity["sets"]["synthetic"]["mean_abs_diff"] <= parity["sets"]["synthetic"]["max_abs_diff"]
    md = to_markdown(results, "python benchmarks/speed.py")
    for heading in ("## Training step", "## Noise and masking", "## Predict", "## Post-processing",
                    "## Threshold search", "## bf16 vs fp32"):
        assert heading in md


def test_bf16_parity_of_a_trained_run_scores_every_lesion_test_split(phantom_dataset, tmp_path):
    from mddpm.training.train import train

    small = [*TINY_NET, "model.net.channel_mult=[1,2]", "train.batch_size=2", "train.max_steps=1",
             "train.val_every=1", "train.val_batches=1"]
    run = train(phantom_dataset, "mddpm-released", out=tmp_path / "run", overrides=small, progress=False)
    result = bench_bf16_parity(tiny_settings(run=str(run), data=str(phantom_dataset)), torch.device("cpu"))
    assert "trained run" in result["source"] and set(result["sets"]) == {"lesion_test"}
    parity = result["sets"]["lesion_test"]
    assert parity["volumes"] == 2  # every volume of the split, not parity_volumes
    assert 0 <= parity["mean_abs_diff"] <= parity["max_abs_diff"] < 0.5
    assert 0 < parity["auprc_fp32"] <= 1 and parity["auprc_change"] == parity["auprc_bf16"] - parity["auprc_fp32"]


def test_cli_writes_json_and_markdown_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "speed"
    argv = ["--out", str(out), "--device", "cpu", "--stages", "threshold", "--repeats", "1", "--pooled-volumes", "2"]
    assert main(argv) == 0
    data = json.loads((tmp_path / "speed.json").read_text())
    assert data["stages"]["threshold"]["result"]["volumes"] == 2
    assert data["machine"]["torch"] == torch.__version__ and data["machine"]["cores"] >= 1
    assert "Threshold search" in (tmp_path / "speed.md").read_text()
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--run", "somewhere"], ["--repeats", "0"]])
def test_cli_rejects_bad_options(tmp_path, extra, capsys):
    assert main(["--out", str(tmp_path / "s"), "--device", "cpu", *extra]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()

