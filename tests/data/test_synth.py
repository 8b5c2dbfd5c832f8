"""Synthetic brains from the MNI152 anatomy: format, determinism, lesion placement and contrast, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from mddpm.cli.main import main
from mddpm.data.dataset import load_dataset
from mddpm.data.synth import build as synth
from mddpm.errors import MddpmError
from mddpm.io import read_nifti

# one case of every set, generated in-process (the anatomy is cached for the session)
COUNTS = dict(n_train=2, n_val=1, n_test=1, n_tumour_val=1, n_tumour_test=1, n_ms_val=1, n_ms_test=1)


@pytest.fixture(scope="module")
def synth_dataset(tmp_path_factory) -> Path:
    return synth.synthesize(tmp_path_factory.mktemp("synth") / "ds", **COUNTS, seed=7, workers=1)


def _arrays(root: Path, case_id: str):
    case = load_dataset(root).cases[case_id]
    image, affine = read_nifti(case.image)
    mask = read_nifti(case.mask)[0]
    label = read_nifti(case.label)[0] if case.label else None
    return image, mask, label, affine


def test_dataset_loads_and_every_split_names_existing_files(synth_dataset):
    ds = load_dataset(synth_dataset)
    assert set(ds.splits) == {"train", "val", "test", "tumour_val", "tumour_test", "ms_val", "ms_test"}
    assert ds.splits["train"] == ["synth_train_0000", "synth_train_0001"]
    assert ds.folds == [{"train": ds.splits["train"], "val": ds.splits["val"]}]
    for name in ds.splits:
        for case in ds.split(name):
            assert case.image.is_file() and case.mask.is_file()
            assert case.image.name == f"{case.id}_0000.nii.gz" and case.mask.name == f"{case.id}.nii.gz"
            anomalous = name.startswith(("tumour", "ms"))
            assert case.role == ("anomalous" if anomalous else "healthy")
            assert case.group == (name.split("_")[0] if anomalous else "healthy")
            assert (case.label is not None) == anomalous
            if anomalous:
                assert case.label.is_file() and case.label.parent.name == "labels"
    assert ds.split("train", fold=0) == ds.split("train")
    assert not any((synth_dataset / "labels").glob("synth_train_*"))
    settings = ds.meta["provenance"][0]["settings"]
    assert settings["seed"] == 7 and settings["n_ms_test"] == 1 and settings["spacing_mm"] == 2.0
    assert {f["file"] for f in settings["anatomy"]["files"]} >= {"mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"}
    assert settings["generation"]["ms_count"] == [3, 12]


def test_volumes_are_brain_boxes_with_consistent_geometry(synth_dataset):
    for case_id in ("synth_train_0000", "synth_tumour_val_0000", "synth_ms_test_0000"):
        image, mask, label, affine = _arrays(synth_dataset, case_id)
        assert image.dtype == np.float32 and image.min() >= 0 and np.isfinite(image).all()
        assert np.allclose(np.diag(affine)[:3], 2.0)
        assert set(np.unique(mask)) == {0, 1}
        assert (image[mask == 0] == 0).all() and (image[mask == 1] > 0).mean() > 0.99
        # cropped to the brain box: the mask touches all six faces
        for axis in range(3):
            m = np.moveaxis(mask, axis, 0)
            assert m[0].any() and m[-1].any()
        # a brain: 120-180 mm wide (x), MNI-sized
        assert 120 <= image.shape[0] * 2 <= 180 and mask.sum() * 8 > 1.0e6
        if label is not None:
            assert label.shape == image.shape


def test_labels_lie_inside_the_brain_and_lesions_are_hyperintense(synth_dataset):
    for case_id, min_voxels in (("synth_tumour_val_0000", 1000), ("synth_tumour_test_0000", 1000),
                                ("synth_ms_val_0000", 3), ("synth_ms_test_0000", 3)):
        image, mask, label, _ = _arrays(synth_dataset, case_id)
        lesion, brain = label > 0, mask > 0
        assert lesion.sum() >= min_voxels
        assert not (lesion & ~brain).any()
        rest = image[brain & ~lesion]
        white_matter = np.percentile(rest, 25)  # the darkest tissue on T2
        lesion_mean = image[lesion].mean()
        assert lesion_mean > 1.4 * white_matter, case_id
        # realistic, not saturated: darker than the brightest CSF
        assert lesion_mean < np.percentile(rest, 99.5), case_id
        # the lesion stands out from the tissue right around it
        ring = ndimage.binary_dilation(lesion, iterations=2) & ~lesion & brain
        assert lesion_mean > image[ring].mean(), case_id


def test_tumour_is_one_mass_and_ms_has_several_plaques(synth_dataset):
    _, _, tumour, _ = _arrays(synth_dataset, "synth_tumour_test_0000")
    assert ndimage.label(tumour)[1] == 1
    info = load_dataset(synth_dataset).meta["provenance"][0]["settings"]["cases"]
    plaques = info["synth_ms_val_0000"]["plaques"]
    assert 3 <= len(plaques) <= 12
    assert info["synth_tumour_test_0000"]["oedema_radius_mm"] > info["synth_tumour_test_0000"]["mass_radius_mm"]


def test_same_seed_same_cases_whatever_the_set_sizes(synth_dataset, tmp_path):
    other = synth.synthesize(tmp_path / "other", n_train=1, n_val=1, n_test=0, n_tumour_val=0, n_tumour_test=1,
                             n_ms_val=0, n_ms_test=0, seed=7, workers=1)
    assert set(load_dataset(other).splits) == {"train", "val", "test", "tumour_test"}
    for case_id in ("synth_train_0000", "synth_tumour_test_0000"):
        for a, b in zip(_arrays(synth_dataset, case_id), _arrays(other, case_id)):
            np.testing.assert_array_equal(a, b)


def test_cases_differ_between_seeds_and_indices():
    anat = synth.load_anatomy(2.0)
    a = synth.generate_case(anat, "healthy", synth.case_seed(0, "train", 0))
    b = synth.generate_case(anat, "healthy", synth.case_seed(1, "train", 0))
    c = synth.generate_case(anat, "healthy", synth.case_seed(0, "train", 1))
    assert len({synth.case_seed(0, "train", 0), synth.case_seed(0, "val", 0), synth.case_seed(1, "train", 0)}) == 3
    for other in (b, c):
        assert other.image.shape != a.image.shape or not np.array_equal(other.image, a.image)


def test_bad_requests_are_refused_with_one_line(tmp_path):
    with pytest.raises(MddpmError, match="n_ms_test=-1"):
        synth.synthesize(tmp_path / "a", **{**COUNTS, "n_ms_test": -1})
    with pytest.raises(MddpmError, match="at least one train"):
        synth.synthesize(tmp_path / "a", **{**COUNTS, "n_train": 0})
    with pytest.raises(MddpmError, match="seed=-2"):
        synth.synthesize(tmp_path / "a", **COUNTS, seed=-2)
    with pytest.raises(MddpmError, match="spacing_mm"):
        synth.synthesize(tmp_path / "a", **COUNTS, spacing_mm=10.0, workers=1)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    with pytest.raises(MddpmError, match="did not write there"):
        synth.synthesize(tmp_path / "notes", **COUNTS, force=True, workers=1)
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "precious"


def test_a_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    real = synth.generate_case
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "generate_case", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        synth.synthesize(tmp_path / "ds", **COUNTS, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_dataset_and_preview_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["synth", str(out), "--size", "small", "--n-train", "1", "--n-val", "1", "--n-test", "0",
            "--n-tumour-val", "0", "--n-tumour-test", "0", "--n-ms-val", "0", "--n-ms-test", "1", "--workers", "1",
            "--seed", "3"]
    assert main(args + ["--preview"]) == 0
    ds = load_dataset(out)
    assert sorted(ds.cases) == ["synth_ms_test_0000", "synth_train_0000", "synth_val_0000"]
    assert (out / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = (out / "dataset.json").read_text()
    capsys.readouterr()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "dataset.json").read_text() == before
    assert main(args[:-1] + ["4", "--force"]) == 0
    assert json.loads((out / "dataset.json").read_text())["provenance"][0]["settings"]["seed"] == 4
    (out / "images" / "scan.nii.gz").write_text("not ours")  # --force deletes no file synth did not write
    capsys.readouterr()
    assert main(args + ["--force"]) == 2
    assert "did not write there (e.g. images/scan.nii.gz)" in capsys.readouterr().err
    assert (out / "images" / "scan.nii.gz").read_text() == "not ours"


def test_preview_montage_shows_healthy_and_each_lesion_group(synth_dataset, tmp_path):
    import matplotlib.image

    from mddpm.viz.montage import preview_montage

    png = preview_montage(synth_dataset, tmp_path / "p.png", n=1, slices=3)
    rows_1 = matplotlib.image.imread(png).shape[0]
    png2 = preview_montage(synth_dataset, tmp_path / "p2.png", n=2, slices=3)
    assert matplotlib.image.imread(png2).shape[0] > rows_1  # 2 healthy + 2 tumour + 2 ms rows vs 3
    with pytest.raises(MddpmError, match="already exists"):
        preview_montage(synth_dataset, png)


@pytest.mark.slow
def test_parallel_workers_write_the_same_files(synth_dataset, tmp_path):
    parallel = synth.synthesize(tmp_path / "par", **COUNTS, seed=7, workers=2)
    for case_id in load_dataset(synth_dataset).cases:
        for a, b in zip(_arrays(synth_dataset, case_id), _arrays(parallel, case_id)):
            np.testing.assert_array_equal(a, b)


def test_warp_reads_the_voxel_it_is_told_to():
    rng = np.random.default_rng(0)
    volumes = rng.random((2, 5, 6, 7), dtype=np.float32)
    where = np.indices((5, 6, 7), dtype=np.float32)
    np.testing.assert_allclose(synth.warp(volumes, where), volumes, atol=1e-6)
    shifted = where.copy()
    shifted[1] += 1  # read y + 1: the last y row falls outside and reads 0
    out = synth.warp(volumes, shifted)
    np.testing.assert_allclose(out[:, :, :-1], volumes[:, :, 1:], atol=1e-6)
    assert (out[:, :, -1] == 0).all()
    shifted[2] += 0.5  # halfway between two z voxels: their mean
    np.testing.assert_allclose(synth.warp(volumes, shifted)[:, :, :-1, :-1],
                               (volumes[:, :, 1:, :-1] + volumes[:, :, 1:, 1:]) / 2, atol=1e-6)
