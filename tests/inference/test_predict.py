"""Inference: `predict` / `mddpm predict` on the phantom dataset, and the scores."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

import toy_methods  # noqa: F401  (registers the "tiny" test method)
from mddpm.cli.main import main
from mddpm.data.cache import load_prepared
from mddpm.data.prepare import prepare_dataset, prepared_path
from mddpm.data.synth.phantom import make_phantom_dataset
from mddpm.errors import MddpmError
from mddpm.inference.predict import predict
from mddpm.inference.scores import anomaly_score, mahalanobis_score, ssim_map
from mddpm.io import read_json


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_run):
    root = tmp_path_factory.mktemp("predict")
    dataset = make_phantom_dataset(root / "phantom")
    prepare_dataset(dataset, "demo", workers=1, progress=False)  # in-process: faster than a pool for 10 cases
    return dataset, make_run(root / "tiny-run", "tiny"), make_run(root / "intensity-run", "intensity")


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def test_predict_writes_one_map_per_case_on_the_prepared_grid(setup, tmp_path):
    dataset, run, _ = setup
    out = predict(run, dataset, "lesion_val", tmp_path / "maps", progress=False)
    meta = read_json(out / "predict.json")
    prepared = load_prepared(prepared_path(dataset, "demo"))
    assert meta["case_ids"] == ["case006", "case007"] and meta["split"] == "lesion_val"
    assert meta["prepared"] == str(prepared.folder.resolve()) and meta["run"] == str(run.resolve())
    assert meta["dataset"] == str(dataset.resolve()) and meta["config"]["method"] == "tiny"
    assert meta["settings"]["seconds_per_volume"] > 0 and meta["settings"]["score"] == "l1"
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case006.nii.gz", "case007.nii.gz"]
    for case_id in meta["case_ids"]:
        amap, affine = _load(out / f"{case_id}.nii.gz")
        recon, recon_affine = _load(out / "recon" / f"{case_id}.nii.gz")
        image = prepared.volume(case_id)[0]  # [Z, H, W]
        assert amap.shape == recon.shape == (48, 48, 25) and amap.dtype == np.float32
        np.testing.assert_allclose(affine, prepared.affines[prepared.index(case_id)])
        np.testing.assert_allclose(recon_affine, affine)
        # the map is |x - x^| of the written reconstruction, in the [H, W, Z] layout
        np.testing.assert_allclose(amap, np.abs(image.transpose(1, 2, 0) - recon), atol=1e-6)


def test_predict_is_deterministic_and_per_case(setup, tmp_path):
    dataset, run, _ = setup
    a = predict(run, dataset, "lesion_val", tmp_path / "a", progress=False)
    b = predict(run, dataset, "lesion_val", tmp_path / "b", progress=False)
    for case_id in ("case006", "case007"):
        np.testing.assert_array_equal(_load(a / f"{case_id}.nii.gz")[0], _load(b / f"{case_id}.nii.gz")[0])
    # noise is drawn per case: the two cases' reconstructions of the same net see different noise
    prepared = load_prepared(prepared_path(dataset, "demo"))
    r6 = _load(a / "recon" / "case006.nii.gz")[0] - prepared.volume("case006")[0].transpose(1, 2, 0)
    r7 = _load(a / "recon" / "case007.nii.gz")[0] - prepared.volume("case007")[0].transpose(1, 2, 0)
    assert not np.allclose(r6[:4, :4], r7[:4, :4])  # background corner: only the noise differs


def test_existing_output_is_refused_unless_force(setup, tmp_path):
    dataset, run, _ = setup
    out = predict(run, dataset, "lesion_val", tmp_path / "maps", progress=False)
    with pytest.raises(MddpmError, match="already exists"):
        predict(run, dataset, "test", out, progress=False)
    predict(run, dataset, "test", out, force=True, progress=False)
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case005.nii.gz"]  # the earlier maps removed
    assert sorted(p.name for p in (out / "recon").iterdir()) == ["case005.nii.gz"]


def test_force_deletes_no_file_it_did_not_write(setup, tmp_path):
    """A folder holding scans (a copy of images/, say) and notes is refused, even with --force."""
    dataset, run, _ = setup
    out = predict(run, dataset, "lesion_val", tmp_path / "maps", progress=False)
    (out / "case000_0000.nii.gz").write_bytes(b"a scan")
    (out / "notes.txt").write_text("mine")
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(MddpmError, match="2 file\\(s\\) mddpm did not write there"):
        predict(run, dataset, "test", out, force=True, progress=False)
    assert sorted(p.name for p in out.rglob("*")) == before
    assert (out / "notes.txt").read_text() == "mine"


def test_t_fix_ensemble_is_the_mean_of_single_steps(setup, tmp_path):
    dataset, run, _ = setup
    maps = {}
    for name, t_fix in (("lo", [100]), ("hi", [900]), ("ens", [100, 900])):
        out = predict(run, dataset, "test", tmp_path / name, t_fix=t_fix, progress=False)
        maps[name] = _load(out / "case005.nii.gz")[0]
        assert read_json(out / "predict.json")["settings"]["t_fix"] == t_fix
    assert not np.allclose(maps["lo"], maps["hi"])
    np.testing.assert_allclose(maps["ens"], (maps["lo"] + maps["hi"]) / 2, atol=1e-6)


def test_noise_per_slice_differs_from_per_volume(setup, tmp_path):
    dataset, run, _ = setup
    vol = _load(predict(run, dataset, "test", tmp_path / "v", progress=False) / "recon" / "case005.nii.gz")[0]
    sl = _load(predict(run, dataset, "test", tmp_path / "s", noise_per="slice", progress=False)
               / "recon" / "case005.nii.gz")[0]
    corner_v, corner_s = vol[:4, :4, :], sl[:4, :4, :]  # background: reconstruction = net(noise) only
    assert np.allclose(corner_v[..., 0], corner_v[..., 1])  # one field shared by all slices
    assert not np.allclose(corner_s[..., 0], corner_s[..., 1])


def test_options_a_method_lacks_are_errors(setup, tmp_path):
    dataset, _, intensity = setup
    with pytest.raises(MddpmError, match="no diffusion step"):
        predict(intensity, dataset, "test", tmp_path / "a", t_fix=[250], progress=False)
    with pytest.raises(MddpmError, match="draws no test-time noise"):
        predict(intensity, dataset, "test", tmp_path / "b", noise_per="slice", progress=False)
    with pytest.raises(MddpmError, match="no chunk size"):
        predict(intensity, dataset, "test", tmp_path / "c", chunk_size=8, progress=False)
    with pytest.raises(MddpmError, match="no split 'nope'"):
        predict(intensity, dataset, "nope", tmp_path / "d", progress=False)
    with pytest.raises(MddpmError, match="weights file not found"):
        predict(tmp_path, dataset, "test", tmp_path / "e", progress=False)
    assert not any((tmp_path / n).exists() and any((tmp_path / n).iterdir()) for n in "abcde")


def test_intensity_map_is_the_image_inside_the_brain(setup, tmp_path):
    dataset, _, run = setup
    out = predict(run, dataset, "lesion_test", tmp_path / "maps", progress=False)
    prepared = load_prepared(prepared_path(dataset, "demo"))
    image, mask, _ = prepared.volume("case008")
    expected = np.abs(image * mask).transpose(1, 2, 0)  # abs: the B-spline undershoots 0 near edges
    np.testing.assert_allclose(_load(out / "case008.nii.gz")[0], expected, atol=1e-6)


def test_bf16_and_ssim_l1_options(setup, tmp_path):
    dataset, run, _ = setup
    fp32 = _load(predict(run, dataset, "test", tmp_path / "fp32", progress=False) / "case005.nii.gz")[0]
    bf16 = _load(predict(run, dataset, "test", tmp_path / "bf16", precision="bf16", progress=False)
                 / "case005.nii.gz")[0]
    assert bf16.dtype == np.float32 and np.abs(bf16 - fp32).max() < 0.05
    out = predict(run, dataset, "test", tmp_path / "ssim", score="ssim-l1", progress=False)
    fused = _load(out / "case005.nii.gz")[0]
    assert read_json(out / "predict.json")["settings"]["ssim"]["alpha"] == 0.84
    assert fused.min() >= 0 and fused.max() <= 2 and not np.allclose(fused, fp32)


def test_ssim_map_matches_scikit_image_inside_the_border():
    g = torch.Generator().manual_seed(0)
    x = torch.rand((1, 1, 40, 40), generator=g)
    y = (x + 0.2 * torch.rand((1, 1, 40, 40), generator=g)).clamp(0, 1)
    ours = ssim_map(x, y)[0, 0].numpy()
    _, ref = structural_similarity(x[0, 0].numpy(), y[0, 0].numpy(), data_range=1.0, gaussian_weights=True,
                                   sigma=1.5, use_sample_covariance=False, full=True)
    np.testing.assert_allclose(ours[5:-5, 5:-5], ref[5:-5, 5:-5], atol=1e-5)  # borders: padding differs
    np.testing.assert_allclose(ssim_map(x, x).numpy(), 1.0, atol=1e-5)
    fused = anomaly_score(x, y, "ssim-l1")
    np.testing.assert_allclose(fused.numpy(), (0.84 * (1 - ssim_map(x, y)) + 0.16 * (x - y).abs()).numpy(), atol=1e-6)
    with pytest.raises(ValueError):
        anomaly_score(x, y, "l2")


def test_cli_predict(setup, tmp_path, capsys):
    dataset, run, _ = setup
    args = ["predict", str(run), "--data", str(dataset), "--split", "test", "--out", str(tmp_path / "maps"),
            "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    assert "s/volume" in capsys.readouterr().out
    assert (tmp_path / "maps" / "case005.nii.gz").is_file()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--force", "--t-fix", "100", "300"]) == 0
    assert read_json(tmp_path / "maps" / "predict.json")["settings"]["t_fix"] == [100, 300]


@pytest.mark.slow  # a tiny U-Net still takes seconds per step and per volume on 2 busy CPU cores
def test_registered_diffusion_method_train_predict_detect(setup, tmp_path):
    from mddpm.inference.detect import detect
    from mddpm.training.train import train

    dataset, _, _ = setup
    small = ["model.net.model_channels=8", "model.net.groups=4", "model.net.head_channels=8",
             "model.net.channel_mult=[1,2]", "train.batch_size=2", "train.max_steps=2", "train.val_every=2",
             "train.val_batches=1"]
    run = train(dataset, "mddpm-released", out=tmp_path / "run", overrides=small, progress=False)
    shared = predict(run, dataset, "test", tmp_path / "shared", progress=False)
    single = predict(run, dataset, "test", tmp_path / "single", noise_per="slice", t_fix=[250], progress=False)
    assert read_json(shared / "predict.json")["settings"]["noise_per"] == "volume"
    settings = read_json(single / "predict.json")["settings"]
    assert settings["noise_per"] == "slice" and settings["t_fix"] == [250]
    a, b = _load(shared / "case005.nii.gz")[0], _load(single / "case005.nii.gz")[0]
    assert a.shape == b.shape == (48, 48, 25) and not np.allclose(a, b)
    with pytest.raises(MddpmError, match="outside"):
        predict(run, dataset, "test", tmp_path / "bad", t_fix=[1000], progress=False)
    out = detect(dataset / "images" / "case006_0000.nii.gz", run, tmp_path / "detect",
                 mask=dataset / "masks" / "case006.nii.gz", threshold=0.2)
    assert _load(out / "anomaly_map.nii.gz")[0].shape == (32, 32, 16)


def test_an_interrupted_prediction_is_completed_by_the_same_command(setup, tmp_path, monkeypatch):
    """Ctrl-C after the first case: the rerun (no --force) scores only the missing cases, and the maps equal
    those of an uninterrupted run; another request on that folder is refused without --force."""
    from mddpm.inference import predict as predict_module

    dataset, run, _ = setup
    whole = predict(run, dataset, "train", tmp_path / "whole", progress=False)
    real_write, calls = predict_module.write_nifti, []

    def write_then_stop(*args):
        calls.append(args[0])
        if len(calls) == 3:  # the second case's reconstruction: the first case is complete
            raise KeyboardInterrupt
        real_write(*args)

    out = tmp_path / "maps"
    monkeypatch.setattr(predict_module, "write_nifti", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        predict(run, dataset, "train", out, progress=False)
    monkeypatch.setattr(predict_module, "write_nifti", real_write)
    assert not (out / "predict.json").exists() and (out / "predict.started.json").is_file()
    assert [p.name for p in out.glob("*.nii.gz")] == ["case000.nii.gz"]
    assert not [p for p in out.rglob(".*")], "temporary files left"

    with pytest.raises(MddpmError, match="interrupted prediction with other settings"):
        predict(run, dataset, "train", out, progress=False, precision="bf16")
    predict(run, dataset, "train", out, progress=False)
    meta = read_json(out / "predict.json")
    assert meta["settings"]["resumed_cases"] == 1 and not (out / "predict.started.json").exists()
    for map_path in sorted(whole.glob("*.nii.gz")):
        np.testing.assert_array_equal(_load(out / map_path.name)[0], _load(map_path)[0])
    assert sorted(p.name for p in out.rglob("*")) == sorted(p.name for p in whole.rglob("*"))


def test_mahalanobis_score_by_hand():
    x = torch.tensor([[[[0.5, 0.2]]]])  # [1, 1, 1, 2]
    recons = torch.tensor([[[[[0.4, 0.2]]]], [[[[0.2, 0.2]]]]])  # K = 2: mean (0.3, 0.2), var (0.01, 0)
    d = mahalanobis_score(x, recons, eps=1e-4).numpy()
    np.testing.assert_allclose(d[0, 0, 0], [0.2 / np.sqrt(0.01 + 1e-4), 0.0], rtol=1e-5)
    local = mahalanobis_score(x, recons, local=True, eps=1e-4).numpy()  # both pixels: var (0.01 + 0) / 2
    np.testing.assert_allclose(local[0, 0, 0], [0.2 / np.sqrt(0.005 + 1e-4), 0.0], rtol=1e-5)


def test_mahalanobis_option_draws_several_reconstructions(setup, tmp_path):
    dataset, run, intensity = setup
    out = predict(run, dataset, "test", tmp_path / "mhd", score="mahalanobis", samples=3, progress=False)
    settings = read_json(out / "predict.json")["settings"]
    assert settings["mahalanobis"] == {"samples": 3, "eps": 1e-4} and settings["score"] == "mahalanobis"
    l1 = _load(predict(run, dataset, "test", tmp_path / "l1", progress=False) / "case005.nii.gz")[0]
    d = _load(out / "case005.nii.gz")[0]
    assert d.min() >= 0 and np.isfinite(d).all() and not np.allclose(d * 0.01, l1, atol=1e-3)
    # a deterministic method has no spread: the distance is its l1 map over sqrt(eps)
    det = _load(predict(intensity, dataset, "test", tmp_path / "det", score="mahalanobis", samples=2,
                        progress=False) / "case005.nii.gz")[0]
    ref = _load(predict(intensity, dataset, "test", tmp_path / "ref", progress=False) / "case005.nii.gz")[0]
    np.testing.assert_allclose(det * 0.01, ref, atol=1e-5)
    with pytest.raises(MddpmError, match="choose one"):
        predict(run, dataset, "test", tmp_path / "x", score="mahalanobis", t_fix=[100], progress=False)
    with pytest.raises(MddpmError, match="--samples 1"):
        predict(run, dataset, "test", tmp_path / "y", score="mahalanobis", samples=1, progress=False)


def test_signed_score_keeps_bright_differences_only():
    x = torch.tensor([[[[0.5, 0.2, 0.3]]]])
    recon = torch.tensor([[[[0.3, 0.4, 0.3]]]])
    np.testing.assert_allclose(anomaly_score(x, recon, "signed").numpy()[0, 0, 0], [0.2, 0.0, 0.0], atol=1e-7)
