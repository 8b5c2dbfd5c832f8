"""`mddpm detect RAW --preprocess`: the run's own preprocessing, scoring in template space, results on the raw grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import mddpm.inference.detect_raw as detect_raw_module
from mddpm.cli.main import main
from mddpm.errors import MddpmError
from mddpm.inference.detect_raw import detect_raw
from mddpm.io import write_json
from mddpm.preprocess.pipeline import preprocess_dataset

NO_POSTPROCESS = {"erosion_iterations": 0, "median_filter": {"kernel": 1},
                  "components": {"removed_if_voxels_at_most": 0}}


@pytest.fixture(scope="module")
def raw_setup(make_raw_scan, preprocess_settings, make_run, tmp_path_factory):
    """A dataset preprocessed from one raw scan, an `intensity` run "trained" on it, and another raw scan
    (raw scans of the 3 mm template world of tests/conftest.py)."""
    root = tmp_path_factory.mktemp("detect_raw")
    make_raw_scan(root / "train", "h1", seed=1, bias=0.0)
    preprocess_dataset(root / "train" / "scans", root / "dataset", preprocess_settings(bias_correction=False),
                       masks_dir=root / "train" / "masks", progress=False)
    run = make_run(root / "run", "intensity")
    write_json(run / "config.json", {"method": "intensity", "dataset": str(root / "dataset"), "fold": None})
    write_json(run / "threshold.json", {"threshold": 0.5, "postprocess": NO_POSTPROCESS})
    return run, make_raw_scan(root / "new", "s2", seed=7, bias=0.0)


def _agreement(out, paths) -> tuple[float, float]:
    """(correlation inside the eroded raw brain of the raw scan and the anomaly map on the raw grid, distance
    in mm between their intensity-weighted centres in the brain): the intensity method's map is the
    normalised preprocessed scan, so both are good only when the map is brought back to the right place."""
    raw = nib.load(str(paths["image"]))
    amap = nib.load(str(out / "anomaly_map.nii.gz"))
    assert amap.shape == raw.shape and np.allclose(amap.affine, raw.affine, atol=1e-4)
    mask = sitk.ReadImage(str(paths["mask"]))
    brain = sitk.GetArrayFromImage(sitk.BinaryErode(mask, [2, 2, 2])).transpose(2, 1, 0) > 0
    values = np.asarray(amap.dataobj)
    scored = np.isfinite(values)  # NaN: brain the model grid leaves out (reported as unscored)
    brain &= scored
    correlation = float(np.corrcoef(np.asarray(raw.dataobj)[brain], values[brain])[0, 1])
    values = np.nan_to_num(values)
    inside = (sitk.GetArrayFromImage(mask).transpose(2, 1, 0) > 0) & scored
    centre = [nib.affines.apply_affine(raw.affine, (np.argwhere(inside) * w[inside][:, None]).sum(0) / w[inside].sum())
              for w in (values, np.asarray(raw.dataobj, dtype=np.float64))]
    return correlation, float(np.linalg.norm(centre[0] - centre[1]))


@pytest.mark.slow  # about 20 s here: two registrations and N4-free preprocessing of 3 mm scans
def test_a_raw_scan_is_scored_and_mapped_back_onto_its_own_grid(raw_setup, tmp_path, monkeypatch):
    run, paths = raw_setup
    out = detect_raw(paths["image"], run, tmp_path / "out", mask=paths["mask"], progress=False)
    aligned, offset = _agreement(out, paths)
    seg = nib.load(str(out / "segmentation.nii.gz"))
    assert seg.get_data_dtype() == np.uint8 and int(seg.header["qform_code"]) == 1 and np.asarray(seg.dataobj).any()
    monkeypatch.setattr(detect_raw_module, "_inverse", lambda matrix: None)  # forget the registration
    misplaced, wrong_offset = _agreement(detect_raw(paths["image"], run, tmp_path / "wrong", mask=paths["mask"],
                                                    progress=False), paths)
    # measured: 0.80 and 2.4 mm (3-4 mm voxels, registered, resampled thrice), 0.32 and 6.4 mm without it
    assert aligned > 0.7 and offset < 4.0 and misplaced < 0.5 and wrong_offset > 5.0, (aligned, offset, misplaced,
                                                                                        wrong_offset)


@pytest.mark.slow
def test_a_mask_is_needed_when_the_dataset_had_given_masks(raw_setup, tmp_path):
    run, paths = raw_setup
    with pytest.raises(MddpmError, match="pass --mask"):
        detect_raw(paths["image"], run, tmp_path / "a", progress=False)


def test_a_run_without_recorded_preprocessing_is_refused(make_run, tmp_path, capsys):
    run = make_run(tmp_path / "bare", "intensity")
    write_json(run / "threshold.json", {"threshold": 0.5})
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), str(scan))
    with pytest.raises(MddpmError, match="was not written by `mddpm preprocess`"):
        detect_raw(scan, run, tmp_path / "b")
    assert main(["detect", str(tmp_path), "--preprocess", "--model", str(run), "--out", str(tmp_path / "c")]) == 2
    assert "--preprocess takes one raw scan" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
