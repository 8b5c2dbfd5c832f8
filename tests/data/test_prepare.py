"""Preparation onto the model grid: crop/pad, percentile normalisation, resampling, affines, cache."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from mddpm.cli.main import main
from mddpm.data.cache import load_prepared
from mddpm.data.dataset import load_dataset, save_dataset_json
from mddpm.data.grids import GRIDS, GridSpec
from mddpm.data.prepare import prepare_dataset, prepared_path
from mddpm.data.volume import crop_or_pad, normalise_percentiles, prepare_volume, to_original_space
from mddpm.errors import MddpmError
from mddpm.io import read_json, read_nifti, write_nifti

RAW = GridSpec(curvature_flow=False, percentiles=(0.0, 100.0))  # plain min-max: isolates geometry


def rotated_affine(spacing=1.0) -> np.ndarray:
    """A flipped, permuted and translated voxel-to-world map (not just a diagonal)."""
    a = np.zeros((4, 4))
    a[:3, :3] = np.array([[0, -1, 0], [0, 0, 1], [-1, 0, 0]]) * spacing
    a[:3, 3] = [30.0, -12.5, 7.0]
    a[3, 3] = 1
    return a


def test_grids():
    assert GRIDS["paper"].shape == (96, 96, 50) and GRIDS["paper"].tag == "96x96x50"
    assert GRIDS["demo"].shape == (48, 48, 25) and GRIDS["demo"].tag == "48x48x25"
    assert GridSpec(curvature_flow=False).tag == "96x96x50-nocf"
    assert GridSpec(percentiles=(0.5, 99.5)).tag == "96x96x50-p0.5-99.5"
    assert GridSpec(crop_mm=(9, 9, 9), spacing_mm=2.0).shape == (5, 5, 5)  # ceil


def test_crop_or_pad_centres_with_extra_voxel_at_start():
    x = np.arange(5)[:, None, None] * 100 + np.arange(4)[None, :, None] * 10 + np.arange(1)[None, None, :] + 1
    out, start = crop_or_pad(x, (2, 7, 1))
    # axis 0: 5 -> 2 removes 3 voxels, 2 of them at the start; axis 1: 4 -> 7 adds 3, 2 at the start
    assert start.tolist() == [2, -2, 0]
    assert out[:, 0].sum() == 0 and out[:, 1].sum() == 0 and out[:, 6].sum() == 0
    np.testing.assert_array_equal(out[:, 2:6, 0], x[2:4, :, 0])
    same, start = crop_or_pad(x, x.shape)
    np.testing.assert_array_equal(same, x)
    assert start.tolist() == [0, 0, 0]


def test_crop_or_pad_matches_torchio():
    tio = pytest.importorskip("torchio")
    x = np.random.default_rng(0).random((5, 7, 6)).astype(np.float32)
    for size in [(2, 10, 3), (8, 4, 6), (5, 8, 1)]:
        ref = tio.CropOrPad(size)(tio.ScalarImage(tensor=x[None])).data.numpy()[0]
        np.testing.assert_array_equal(crop_or_pad(x, size)[0], ref)


def test_percentile_normalisation():
    rng = np.random.default_rng(1)
    image = np.zeros((20, 20, 20), np.float32)
    mask = np.zeros(image.shape, bool)
    mask[4:16, 4:16, 4:16] = True
    image[mask] = rng.normal(100, 20, mask.sum())
    out = normalise_percentiles(image, mask)
    low, high = np.percentile(image[mask], (1, 99))
    assert out.dtype == np.float32
    assert out.min() == 0 and out.max() == 1
    assert np.all(out[~mask] == 0)  # background (below the 1st percentile) is exactly 0
    np.testing.assert_allclose(out[mask], np.clip((image[mask] - low) / (high - low), 0, 1), atol=1e-6)
    at_or_above = image[mask] >= high  # the in-mask 99th percentile and above map to 1
    assert np.all(out[mask][at_or_above] == 1) and np.all(out[mask][~at_or_above] < 1)
    assert abs(at_or_above.mean() - 0.01) < 0.002


def test_percentile_normalisation_matches_torchio():
    tio = pytest.importorskip("torchio")
    rng = np.random.default_rng(2)
    image = rng.gamma(2, 50, (12, 12, 12)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[2:10, 3:9, 1:11] = True
    subject = tio.Subject(t2=tio.ScalarImage(tensor=image[None]), mask=tio.LabelMap(tensor=mask[None].astype(np.uint8)))
    ref = tio.RescaleIntensity((0, 1), percentiles=(1, 99), masking_method="mask")(subject)["t2"].data.numpy()[0]
    np.testing.assert_allclose(normalise_percentiles(image, mask), ref, atol=1e-6)


def test_normalisation_rejects_empty_mask():
    with pytest.raises(MddpmError, match="empty"):
        normalise_percentiles(np.ones((4, 4, 4), np.float32), np.zeros((4, 4, 4), bool))


def test_resampling_is_cubic_bspline_on_the_published_grid():
    """Image voxel o samples the input's interpolating cubic B-spline at index 2 o + 1/2."""
    rng = np.random.default_rng(3)
    image = rng.random((12, 10, 8)).astype(np.float32)
    grid = GridSpec(crop_mm=(12, 10, 8), spacing_mm=2.0, curvature_flow=False, percentiles=(0, 100))
    vol = prepare_volume(image, np.ones_like(image), np.eye(4), grid)
    assert vol.image.shape == (4, 6, 5)  # [Z, H, W] of ceil(size / 2)
    normalised = (image - image.min()) / (image.max() - image.min())
    o = np.stack(np.meshgrid(*(np.arange(s) for s in (6, 5, 4)), indexing="ij")).reshape(3, -1)
    ref = ndimage.map_coordinates(normalised.astype(np.float64), 2 * o + 0.5, order=3, mode="mirror").reshape(6, 5, 4)
    np.testing.assert_allclose(vol.image.transpose(1, 2, 0), ref, atol=1e-5)


def test_output_shape_is_ceil_and_masks_are_binary():
    rng = np.random.default_rng(4)
    image = rng.random((11, 9, 7)).astype(np.float32)
    mask = (rng.random(image.shape) * 3).astype(np.float32)  # fractional/graded values: > 0 is brain
    label = np.where(rng.random(image.shape) > 0.7, 2.0, 0.0).astype(np.float32)  # BraTS-like label values
    grid = GridSpec(crop_mm=(11, 9, 7), spacing_mm=2.0, curvature_flow=False)
    vol = prepare_volume(image, mask, np.eye(4), grid, label=label)
    assert vol.image.shape == vol.mask.shape == vol.label.shape == (4, 6, 5)
    assert vol.image.dtype == np.float32 and vol.mask.dtype == np.uint8 and vol.label.dtype == np.uint8
    assert set(np.unique(vol.mask)) <= {0, 1} and set(np.unique(vol.label)) == {0, 1}
    # nearest neighbour at input index 2 o (+1/2 rounds up): the label keeps the source voxel's value
    assert vol.label[0, 0, 0] == (label[1, 1, 1] > 0) and vol.mask[1, 2, 3] == (mask[5, 7, 3] > 0)


def test_curvature_flow_smooths_images_only():
    rng = np.random.default_rng(5)
    image = (10 + rng.normal(0, 1, (16, 16, 16))).astype(np.float32)
    mask = np.ones(image.shape, np.uint8)
    label = (rng.random(image.shape) > 0.5).astype(np.uint8)
    grid = GridSpec(crop_mm=(16, 16, 16), spacing_mm=1.0, percentiles=(0, 100))
    smooth = prepare_volume(image, mask, np.eye(4), grid, label)
    raw = prepare_volume(image, mask, np.eye(4), GridSpec(crop_mm=(16, 16, 16), spacing_mm=1.0, curvature_flow=False,
                                                          percentiles=(0, 100)), label)
    assert np.std(np.diff(smooth.image, axis=2)) < 0.8 * np.std(np.diff(raw.image, axis=2))
    np.testing.assert_array_equal(smooth.label, label.transpose(2, 0, 1))


def test_affine_maps_prepared_voxels_to_the_same_world_points():
    """A linear ramp in world mm is reproduced exactly by the B-spline: any half-voxel error shows."""
    shape = (20, 24, 16)
    affine = rotated_affine(1.0)
    idx = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"), -1)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    ramp = lambda w: w[..., 0] + 0.5 * w[..., 1] - 0.25 * w[..., 2]  # noqa: E731
    image = ramp(world).astype(np.float32)
    grid = GridSpec(crop_mm=shape, spacing_mm=2.0, curvature_flow=False, percentiles=(0, 100))
    vol = prepare_volume(image, np.ones(shape), affine, grid)
    out_idx = np.stack(np.meshgrid(*(np.arange(s) for s in grid.shape), indexing="ij"), -1)
    out_world = out_idx @ vol.affine[:3, :3].T + vol.affine[:3, 3]
    expected = (ramp(out_world) - image.min()) / (image.max() - image.min())
    got = vol.image.transpose(1, 2, 0)
    inner = (slice(2, -2),) * 3  # away from the mirrored boundary
    np.testing.assert_allclose(got[inner], expected[inner], atol=1e-4)
    np.testing.assert_allclose(np.abs(vol.affine[:3, :3]).sum(axis=0), [2.0, 2.0, 2.0])


def test_bright_voxel_keeps_its_world_position_through_crop_and_pad():
    shape = (41, 30, 60)  # x cropped to 36, y padded to 36, z cropped to 40 (all odd/even mixes)
    affine = rotated_affine(1.0)
    grid = GridSpec(crop_mm=(36, 36, 40), spacing_mm=2.0, curvature_flow=False, percentiles=(0, 100))
    for point in [(20, 15, 30), (9, 3, 47), (33, 26, 12)]:
        image = np.zeros(shape, np.float32)
        image[point] = 1
        vol = prepare_volume(image, np.ones(shape), affine, grid)
        z, h, w = np.unravel_index(np.argmax(vol.image), vol.image.shape)
        found = vol.affine @ [h, w, z, 1]
        true = affine @ [*point, 1]
        assert np.all(np.abs(found - true)[:3] <= 0.5 * grid.spacing_mm + 1e-6), (point, found, true)


def test_two_mm_input_on_paper_grid_is_padded_not_resampled():
    rng = np.random.default_rng(6)
    image = rng.random((32, 32, 16)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    vol = prepare_volume(image, np.ones(image.shape), affine, GridSpec(curvature_flow=False, percentiles=(0, 100)))
    assert vol.image.shape == (50, 96, 96)
    shift = np.array([[1, 0, 0, -32], [0, 1, 0, -32], [0, 0, 1, -17], [0, 0, 0, 1]])
    np.testing.assert_allclose(vol.affine, affine @ shift)
    normalised = (image - image.min()) / (image.max() - image.min())
    np.testing.assert_allclose(vol.image[17:33, 32:64, 32:64], normalised.transpose(2, 0, 1), atol=1e-5)
    assert np.abs(vol.image[:17]).max() < 1e-6  # padding


def test_to_original_space_round_trip():
    shape = (40, 44, 36)
    affine = rotated_affine(1.0)
    idx = np.stack(np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij"), -1)
    smooth = np.exp(-3 * (idx**2).sum(-1)).astype(np.float32)
    blob = ((idx**2).sum(-1) < 0.3).astype(np.uint8)
    grid = GridSpec(crop_mm=(40, 40, 40), spacing_mm=2.0, curvature_flow=False, percentiles=(0, 100))
    vol = prepare_volume(smooth, np.ones(shape), affine, grid, label=blob)

    back = to_original_space(vol.image, vol.affine, shape, affine)
    assert back.shape == shape and back.dtype == np.float32
    normalised = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    inner = (slice(4, -4), slice(6, -6), slice(4, -4))  # y was cropped 44 -> 40: the outer 2 voxels are gone
    assert np.abs(back[inner] - normalised[inner]).max() < 0.03
    assert np.all(back[:, :2] == 0) and np.all(back[:, -2:] == 0)  # outside the crop
    cubic = to_original_space(vol.image, vol.affine, shape, affine, order=3)
    assert np.abs(cubic[inner] - normalised[inner]).max() < np.abs(back[inner] - normalised[inner]).max()

    back_label = to_original_space(vol.label, vol.affine, shape, affine, order=0)
    assert set(np.unique(back_label)) == {0.0, 1.0}
    dice = 2 * (back_label * blob).sum() / (back_label.sum() + blob.sum())
    assert dice > 0.9


# ---------------------------------------------------------------------------------------------
# the cache


def test_prepare_dataset_writes_and_loads(phantom_dataset):
    out = prepare_dataset(phantom_dataset, "demo", workers=1, progress=False)
    assert out == prepared_path(phantom_dataset, "demo") == phantom_dataset.resolve() / "prepared" / "48x48x25"
    prep = load_prepared(out)
    ds = load_dataset(phantom_dataset)
    assert prep.case_ids == list(ds.cases)
    n = len(ds.cases)
    assert prep.images.shape == (n, 25, 48, 48) and prep.images.dtype == np.float32
    assert prep.masks.dtype == prep.labels.dtype == np.uint8 and prep.affines.shape == (n, 4, 4)
    assert isinstance(prep.images, np.memmap)
    for cid, case in ds.cases.items():
        image, mask, label = prep.volume(cid)
        near_brain = ndimage.binary_dilation(mask, iterations=2)
        assert mask.sum() > 0 and np.abs(image[~near_brain]).max() < 0.05  # background ~0 (smoothing, B-spline)
        assert (label.sum() > 0) == (case.role == "anomalous")
    # the same case prepared alone gives the same arrays
    case = ds.cases["case007"]
    img, aff = read_nifti(case.image)
    vol = prepare_volume(img, read_nifti(case.mask)[0], aff, "demo", read_nifti(case.label)[0])
    image, mask, label = prep.volume("case007")
    np.testing.assert_array_equal(image, vol.image)
    np.testing.assert_array_equal(label, vol.label)
    np.testing.assert_allclose(prep.affines[prep.index("case007")], vol.affine)
    meta = prep.meta
    assert meta["grid"]["shape"] == [48, 48, 25] and meta["source"] == str(phantom_dataset.resolve())
    assert len(meta["dataset_json_sha256"]) == 64
    with pytest.raises(MddpmError, match="no case"):
        prep.index("nope")
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_cache_is_reused_then_rebuilt_when_stale(phantom_dataset, capsys):
    grid = GridSpec(crop_mm=(96, 96, 48), spacing_mm=8.0)  # 12x12x6: fast
    out = prepare_dataset(phantom_dataset, grid, workers=1, progress=False)
    stamp = (out / "images.npy").stat().st_mtime_ns
    time.sleep(0.01)
    assert prepare_dataset(phantom_dataset, grid, workers=1, progress=False) == out
    assert (out / "images.npy").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert "stale" not in capsys.readouterr().err

    ds = load_dataset(phantom_dataset)
    meta = dict(ds.meta, name="phantom-renamed")
    save_dataset_json(phantom_dataset, {k: v for k, v in meta.items() if k not in ("format", "format_version")})
    prepare_dataset(phantom_dataset, grid, workers=1, progress=False)
    assert "stale" in capsys.readouterr().err
    stamp2 = (out / "images.npy").stat().st_mtime_ns
    assert stamp2 != stamp

    # a source image edited in place also makes the cache stale
    case = ds.cases["case000"]
    img, aff = read_nifti(case.image)
    write_nifti(case.image, img * 2 + 1, aff)
    prepare_dataset(phantom_dataset, grid, workers=1, progress=False)
    assert "stale" in capsys.readouterr().err
    stamp3 = (out / "images.npy").stat().st_mtime_ns
    assert stamp3 != stamp2

    prepare_dataset(phantom_dataset, grid, force=True, workers=1, progress=False)
    assert (out / "images.npy").stat().st_mtime_ns != stamp3
    # a different grid is a different folder
    other = prepare_dataset(phantom_dataset, GridSpec(crop_mm=(96, 96, 48), spacing_mm=8.0, curvature_flow=False),
                            workers=1, progress=False)
    assert other != out and other.name.endswith("-nocf")


def test_prepare_dataset_errors_name_the_file(phantom_dataset):
    ds = load_dataset(phantom_dataset)
    grid = GridSpec(crop_mm=(96, 96, 48), spacing_mm=8.0)
    os.remove(ds.cases["case003"].mask)
    with pytest.raises(MddpmError, match="case003.nii.gz: file not found"):
        prepare_dataset(phantom_dataset, grid, workers=1, progress=False)
    write_nifti(ds.cases["case003"].mask, np.ones((4, 4, 4), np.uint8), np.eye(4))
    with pytest.raises(MddpmError, match=r"case003.nii.gz: shape \(4, 4, 4\) differs"):
        prepare_dataset(phantom_dataset, grid, workers=1, progress=False)
    write_nifti(ds.cases["case003"].mask, np.zeros((32, 32, 16), np.uint8), np.diag([2.0, 2, 2, 1]))
    with pytest.raises(MddpmError, match="case003_0000.nii.gz: brain mask is empty"):
        prepare_dataset(phantom_dataset, grid, workers=1, progress=False)
    assert not prepared_path(phantom_dataset, grid).exists()  # nothing half-written
    assert not [p for p in (phantom_dataset / "prepared").iterdir()]


def test_load_prepared_errors(tmp_path):
    with pytest.raises(MddpmError, match="prepared.json: file not found"):
        load_prepared(tmp_path)


def test_cli_prepare(phantom_dataset, capsys):
    assert main(["prepare", str(phantom_dataset), "--grid", "demo", "--no-curvature-flow", "--workers", "1"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.endswith("prepared/48x48x25-nocf")
    assert load_prepared(out).meta["grid"]["curvature_flow"] is False
    assert main(["prepare", str(phantom_dataset / "missing")]) == 2
    assert "missing: dataset folder not found" in capsys.readouterr().err


@pytest.mark.slow
def test_parallel_workers_give_identical_cache(phantom_dataset, tmp_path):
    grid = GridSpec(crop_mm=(96, 96, 48), spacing_mm=8.0)
    serial = load_prepared(prepare_dataset(phantom_dataset, grid, workers=1, progress=False))
    images = np.array(serial.images)
    parallel = load_prepared(prepare_dataset(phantom_dataset, grid, workers=2, force=True, progress=True))
    np.testing.assert_array_equal(parallel.images, images)
    assert parallel.case_ids == serial.case_ids


def test_around_brain_crop_ignores_zero_padding_and_the_default_stays_centred():
    """``detect``'s crop follows the brain mask's box; the published (dataset) crop stays centred."""
    from mddpm.data.volume import brain_start

    mask = np.zeros((10, 12, 30), bool)
    mask[2:7, 3:9, 20:29] = True
    start = brain_start(mask, (8, 8, 6))
    np.testing.assert_array_equal(start, [0, 2, 22])  # box x 2-6, y 3-8, z 20-28
    padded = np.pad(mask, ((0, 0), (0, 0), (17, 0)))
    np.testing.assert_array_equal(brain_start(padded, (8, 8, 6)), start + [0, 0, 17])
    rng = np.random.default_rng(0)
    image = rng.random(mask.shape).astype(np.float32) * mask
    grid = GridSpec(crop_mm=(8, 8, 6), spacing_mm=1.0, curvature_flow=False)
    np.testing.assert_array_equal(crop_or_pad(image, (8, 8, 6))[1], [1, 2, 12])  # the array's centre by default
    moved = np.eye(4)
    moved[2, 3] = -17.0
    a = prepare_volume(image, mask, np.eye(4), grid, around_brain=True)
    b = prepare_volume(np.pad(image, ((0, 0), (0, 0), (17, 0))), padded, moved, grid, around_brain=True)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_allclose(a.affine, b.affine)  # the same world positions


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_read_only_dataset_with_cache_elsewhere(phantom_dataset, tmp_path, capsys):
    """--cache: prepare, train (a few steps) and predict on a read-only dataset; nothing is written inside it,
    the CLI and the API find the same cache, and the default location stays DATASET/prepared/<tag>."""
    import mddpm
    from mddpm.data.prepare import prepared_path

    assert prepared_path(phantom_dataset, "demo") == phantom_dataset / "prepared" / "48x48x25"
    cache = tmp_path / "shared-cache"
    before = _tree(phantom_dataset)
    modes = {p: p.stat().st_mode for p in [phantom_dataset, *phantom_dataset.rglob("*")]}
    for p in modes:
        p.chmod(modes[p] & ~0o222)
    try:
        assert main(["prepare", str(phantom_dataset), "--grid", "demo", "--workers", "1", "--no-progress",
                     "--cache", str(cache)]) == 0
        printed = Path(capsys.readouterr().out.strip())
        assert printed == prepared_path(phantom_dataset, "demo", cache) and printed.is_relative_to(cache.resolve())
        assert printed.parent.name.startswith("phantom-") and printed.name == "48x48x25"
        assert (printed / "images.npy").is_file()
        run = tmp_path / "run"
        assert main(["train", "--data", str(phantom_dataset), "--method", "vae", "--set", "train.max_steps=2",
                     "--out", str(run), "--workers", "1", "--accelerator", "cpu", "--no-progress",
                     "--logger", "csv", "--cache", str(cache)]) == 0
        assert read_json(run / "config.json")["prepared"] == str(printed)
        assert main(["predict", str(run), "--data", str(phantom_dataset), "--split", "test", "--device", "cpu",
                     "--out", str(tmp_path / "maps"), "--no-progress", "--cache", str(cache)]) == 0
        assert read_json(tmp_path / "maps" / "predict.json")["prepared"] == str(printed)
        api_maps = mddpm.predict(run, phantom_dataset, "val", tmp_path / "api_maps", device="cpu", progress=False,
                                 cache=cache)
        assert read_json(api_maps / "predict.json")["prepared"] == str(printed)
        # without --cache, the read-only dataset is refused with the folder named (the default is unchanged);
        # root writes through the permissions, so this part is for other users only
        if os.geteuid() != 0:
            assert main(["prepare", str(phantom_dataset), "--grid", "demo", "--workers", "1", "--no-progress"]) == 2
            assert f"{phantom_dataset / 'prepared'}" in capsys.readouterr().err
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    assert _tree(phantom_dataset) == before
