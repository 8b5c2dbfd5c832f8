"""`detect` / `mddpm detect`: one scan in, map + segmentation out in the scan's geometry; bad input refused."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mddpm.cli.main import main
from mddpm.errors import MddpmError
from mddpm.inference.detect import NO_MASK, detect
from mddpm.io import read_json, write_json, write_nifti
from mddpm.viz.overlay import overlay_slices


def _load(path: Path):
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def test_detect_writes_outputs_in_the_scan_geometry(detect_run, phantom_case_paths, tmp_path):
    dataset, run = detect_run
    scan, mask, label = phantom_case_paths(dataset)
    out = detect(scan, run, tmp_path / "out", mask=mask)
    scan_img = nib.load(str(scan))
    amap, map_affine = _load(out / "anomaly_map.nii.gz")
    seg, seg_affine = _load(out / "segmentation.nii.gz")
    assert amap.shape == seg.shape == scan_img.shape == (32, 32, 16)
    np.testing.assert_allclose(map_affine, scan_img.affine)
    np.testing.assert_allclose(seg_affine, scan_img.affine)
    assert seg.dtype == np.uint8 and set(np.unique(seg)) <= {0, 1} and amap.dtype == np.float32
    truth = np.asarray(nib.load(str(label)).dataobj) > 0
    hits = (seg.astype(bool) & truth).sum()
    # the bright phantom lesion is found where it is, in the scan's own voxels (~3 % of the brain)
    assert hits / seg.sum() > 0.8 and 2 * hits / (seg.sum() + truth.sum()) > 0.5
    meta = read_json(out / "detect.json")
    assert meta["threshold"] == 0.6 and meta["threshold_source"] == str(run.resolve() / "threshold.json")
    assert (meta["postprocess"]["erosion_iterations"], meta["postprocess"]["median_filter"]["kernel"],
            meta["postprocess"]["components"]["removed_if_voxels_at_most"]) == (1, 3, 7)
    assert meta["lesion_voxels"] == int(seg.sum()) and meta["lesion_volume_ml"] == pytest.approx(seg.sum() * 8 / 1000)
    assert (out / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_threshold_sources(detect_run, phantom_case_paths, make_run, tmp_path):
    dataset, run = detect_run
    scan, mask, _ = phantom_case_paths(dataset)
    high = detect(scan, run, tmp_path / "high", mask=mask, threshold=5.0)
    assert read_json(high / "detect.json")["lesion_voxels"] == 0  # no score reaches 5
    other = tmp_path / "t.json"
    write_json(other, {"threshold": 0.3})
    low = detect(scan, run, tmp_path / "low", mask=mask, threshold=str(other))
    meta = read_json(low / "detect.json")
    assert meta["threshold_source"] == str(other)
    assert meta["postprocess"]["median_filter"]["kernel"] == 5  # published default
    standard = read_json(detect(scan, run, tmp_path / "std", mask=mask) / "detect.json")
    assert meta["lesion_voxels"] > standard["lesion_voxels"]
    no_threshold_run = make_run(tmp_path / "bare", "intensity")
    with pytest.raises(MddpmError, match="no threshold for this run"):
        detect(scan, no_threshold_run, tmp_path / "x", mask=mask)
    write_json(other, {"rule": "bisection"})
    with pytest.raises(MddpmError, match="no finite numeric"):
        detect(scan, run, tmp_path / "y", mask=mask, threshold=other)


def test_bad_input_is_refused_with_one_line_and_nothing_written(detect_run, phantom_case_paths, tmp_path):
    dataset, run = detect_run
    scan, mask, _ = phantom_case_paths(dataset)
    image = nib.load(str(scan))
    data, affine = np.asarray(image.dataobj), image.affine
    write_nifti(tmp_path / "flat.nii.gz", data[:, :, 8], affine)
    nan = data.copy()
    nan[3, 3, 3] = np.nan
    write_nifti(tmp_path / "nan.nii.gz", nan, affine)
    write_nifti(tmp_path / "small_mask.nii.gz", np.ones((32, 32, 15), np.uint8), affine)
    shifted = affine.copy()
    shifted[0, 3] += 10
    write_nifti(tmp_path / "shifted_mask.nii.gz", np.ones((32, 32, 16), np.uint8), shifted)
    write_nifti(tmp_path / "empty_mask.nii.gz", np.zeros((32, 32, 16), np.uint8), affine)
    cases = [
        (tmp_path / "flat.nii.gz", mask, "not a 3-D image"),
        (tmp_path / "nan.nii.gz", mask, "NaN"),
        (scan, tmp_path / "small_mask.nii.gz", "differs from the scan"),
        (scan, tmp_path / "shifted_mask.nii.gz", "affine differs"),
        (scan, tmp_path / "empty_mask.nii.gz", "brain mask is empty"),
        (scan, None, "no brain mask given"),
        (tmp_path / "missing.nii.gz", mask, "file not found"),
    ]
    for bad_scan, bad_mask, message in cases:
        with pytest.raises(MddpmError, match=message) as info:
            detect(bad_scan, run, tmp_path / "out", mask=bad_mask)
        assert "\n" not in str(info.value)
        assert not (tmp_path / "out").exists()
    assert str(MddpmError(NO_MASK)) == "no brain mask given (use --mask; `mddpm preprocess` can make one)"


def test_existing_output_needs_force(detect_run, phantom_case_paths, tmp_path):
    dataset, run = detect_run
    scan, mask, _ = phantom_case_paths(dataset)
    out = detect(scan, run, tmp_path / "out", mask=mask)
    with pytest.raises(MddpmError, match="already exists"):
        detect(scan, run, out, mask=mask)
    detect(scan, run, out, mask=mask, threshold=5.0, force=True)
    assert read_json(out / "detect.json")["threshold"] == 5.0


def test_overlay_slices_follow_the_segmentation():
    brain = np.zeros((8, 8, 20), bool)
    brain[2:6, 2:6, 4:16] = True
    seg = np.zeros_like(brain)
    seg[3:5, 3:5, 9] = True
    seg[3, 3, 12] = True
    assert overlay_slices(brain, seg) == [9, 12]
    spread = overlay_slices(brain, np.zeros_like(brain))
    assert len(spread) == 5 and 4 < spread[0] and spread[-1] < 15 and spread == sorted(spread)


def test_cli_detect(detect_run, phantom_case_paths, tmp_path, capsys):
    dataset, run = detect_run
    scan, mask, _ = phantom_case_paths(dataset)
    args = ["detect", str(scan), "--model", str(run), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == f"mddpm detect: error: {NO_MASK}"
    assert main(args + ["--mask", str(mask)]) == 0
    assert (tmp_path / "out" / "segmentation.nii.gz").is_file()
    assert main(args + ["--mask", str(mask), "--threshold", "0.5", "--force"]) == 0
    assert read_json(tmp_path / "out" / "detect.json")["threshold"] == 0.5


def test_a_folder_of_scans_is_scored_with_the_model_loaded_once(detect_run, phantom_case_paths, tmp_path, monkeypatch):
    import shutil

    import mddpm.inference.detect as detect_module

    dataset, run = detect_run
    scans, masks = tmp_path / "scans", tmp_path / "masks"
    for cid in ("case006", "case007"):
        scan, mask, _ = phantom_case_paths(dataset, cid)
        for src, folder in ((scan, scans), (mask, masks)):
            folder.mkdir(exist_ok=True)
            shutil.copy(src, folder / src.name)  # scans keep the _0000 suffix; masks are <case>.nii.gz
    loads = []
    real = detect_module.build_from_weights
    monkeypatch.setattr(detect_module, "build_from_weights", lambda *a: loads.append(a) or real(*a))
    out = detect(scans, run, tmp_path / "out", mask=masks, progress=False)
    assert len(loads) == 1 and sorted(p.name for p in out.iterdir()) == ["case006", "case007"]
    single = detect(phantom_case_paths(dataset, "case007")[0], run, tmp_path / "one",
                    mask=phantom_case_paths(dataset, "case007")[1])
    for name in ("anomaly_map.nii.gz", "segmentation.nii.gz"):
        np.testing.assert_array_equal(_load(out / "case007" / name)[0], _load(single / name)[0])
    header = nib.load(str(out / "case006" / "segmentation.nii.gz")).header
    assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 1 and header.get_xyzt_units()[0] == "mm"
    bad = tmp_path / "bad"
    shutil.copytree(scans, bad)
    (bad / "case007_0000.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(MddpmError, match=r"case007_0000.nii.gz: cannot read as NIfTI"):
        detect(bad, run, tmp_path / "out1", mask=masks)
    assert not (tmp_path / "out1").exists()  # case006 was not scored first
    (masks / "case007.nii.gz").unlink()
    with pytest.raises(MddpmError, match=r"case007_0000.nii.gz: no brain mask .*case007.nii.gz"):
        detect(scans, run, tmp_path / "out2", mask=masks)
    assert not (tmp_path / "out2").exists()
    with pytest.raises(MddpmError, match="--mask must be a folder"):
        detect(scans, run, tmp_path / "out3", mask=masks / "case006.nii.gz")


def _padded(case: tuple[Path, Path, Path], folder: Path, pad: int, tiles: int = 1, codes=None) -> tuple[Path, Path]:
    """The scan of ``case`` (scan, mask, label) with ``pad`` zero slices added below (its affine moved so every
    brain voxel keeps its world position), its brain repeated ``tiles`` times along z (a brain longer than the
    model grid)."""
    scan, mask, _ = case
    image, affine = _load(scan)
    brain = _load(mask)[0]
    moved = affine.copy()
    moved[:3, 3] -= affine[:3, 2] * pad
    folder.mkdir(parents=True, exist_ok=True)
    for src, name, dtype in ((image, "scan.nii.gz", np.float32), (brain, "mask.nii.gz", np.uint8)):
        write_nifti(folder / name, np.pad(np.tile(src, (1, 1, tiles)), ((0, 0), (0, 0), (pad, 0))).astype(dtype),
                    moved, codes)
    return folder / "scan.nii.gz", folder / "mask.nii.gz"


def test_a_zero_padded_field_of_view_gives_the_same_result_cli_and_api(detect_run, phantom_case_paths, tmp_path):
    """120 mm of zeros below the scan (same world coordinates) used to push the brain out of the
    centred 100 mm crop (Dice 0.64 -> 0.0); the grid now follows the brain."""
    import mddpm

    dataset, run = detect_run
    scan, mask, _ = phantom_case_paths(dataset)
    pad = 60
    padded, padded_mask = _padded(phantom_case_paths(dataset), tmp_path / "padded", pad)
    for out, (s, m) in (("plain", (scan, mask)), ("pad", (padded, padded_mask))):
        assert main(["detect", str(s), "--model", str(run), "--mask", str(m), "--out", str(tmp_path / out),
                     "--device", "cpu"]) == 0
    brain = _load(mask)[0] > 0
    seg = _load(tmp_path / "plain" / "segmentation.nii.gz")[0]
    seg_padded = _load(tmp_path / "pad" / "segmentation.nii.gz")
    np.testing.assert_allclose(seg_padded[1], _load(padded)[1])  # written back in the padded scan's own geometry
    np.testing.assert_array_equal(seg_padded[0][:, :, pad:], seg)  # ... at the right place
    assert not seg_padded[0][:, :, :pad].any() and seg[brain].any()
    amap, amap_padded = (_load(tmp_path / f / "anomaly_map.nii.gz")[0] for f in ("plain", "pad"))
    np.testing.assert_allclose(amap_padded[:, :, pad:][brain], amap[brain], atol=1e-5)
    assert read_json(tmp_path / "pad" / "detect.json")["unscored_fraction"] == 0.0
    detector = mddpm.load(run, device="cpu")
    plain, shifted = detector.score(scan, mask), detector.score(padded, padded_mask)
    np.testing.assert_array_equal(shifted.segmentation[:, :, pad:][brain], plain.segmentation[brain])
    np.testing.assert_array_equal(plain.segmentation, seg > 0)
    assert shifted.unscored_fraction == 0.0 and shifted.unscored_slices == []


def test_scan_score_is_the_mean_of_the_top_percent_of_the_scored_brain():
    from mddpm.inference.detect import scan_score_of

    amap = np.arange(1, 301, dtype=np.float32).reshape(10, 10, 3)
    brain = np.zeros(amap.shape, bool)
    brain[:, :, :2] = True  # 200 brain voxels; the map's maximum, 300, lies outside the brain
    amap[brain & (amap == amap[brain].max())] = np.nan  # one unscored voxel: left out, not a NaN result
    top2 = np.sort(amap[brain][np.isfinite(amap[brain])])[-2:]
    assert scan_score_of(amap, brain) == pytest.approx(top2.mean())  # 199 voxels: ceil(1.99) = 2
    assert np.isnan(scan_score_of(np.full(amap.shape, np.nan), brain))
    assert scan_score_of(amap, brain, top=1.0) == pytest.approx(np.nanmean(amap[brain]))


def test_unscored_brain_is_nan_reported_and_warned(detect_run, phantom_case_paths, tmp_path, capsys):
    """A brain 128 mm long in a 100 mm grid: the slices left out are NaN, in detect.json, on
    Detection and warned about; a brain that mostly does not fit is refused."""
    import mddpm

    dataset, run = detect_run
    scan, mask = _padded(phantom_case_paths(dataset), tmp_path / "long", 0, tiles=4)  # 64 slices of 2 mm, all brain
    out = detect(scan, run, tmp_path / "out", mask=mask, progress=False)
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "warning" in line]
    # the phantom brain spans slices 1-14 of each 16
    assert len(warning) == 1 and "outside the model grid" in warning[0] and "axial slices 1-6, 57-62" in warning[0]
    meta = read_json(out / "detect.json")
    assert meta["unscored_slices"] == [[1, 6], [57, 62]]
    amap, brain = _load(out / "anomaly_map.nii.gz")[0], _load(mask)[0] > 0
    unscored = np.isnan(amap)
    assert meta["unscored_fraction"] == pytest.approx(unscored.sum() / brain.sum(), abs=1e-6)
    assert 0.05 < meta["unscored_fraction"] < 0.5 and (unscored <= brain).all()
    assert unscored[:, :, :7][brain[:, :, :7]].all() and not unscored[:, :, 7:57].any()
    assert np.isfinite(meta["max_score"]) and not _load(out / "segmentation.nii.gz")[0][unscored].any()
    found = mddpm.load(run, device="cpu").score(scan, mask)
    assert found.unscored_fraction == meta["unscored_fraction"] and "unscored_fraction=0.198" in repr(found)
    np.testing.assert_array_equal(np.isnan(found.anomaly_map), unscored)
    # the scan-level score (mean of the top 1 % of the scored brain) and the reconstruction
    scored = amap[brain & ~unscored]
    k = int(np.ceil(0.01 * scored.size))
    assert meta["scan_score"] == pytest.approx(np.sort(scored)[-k:].mean(), rel=1e-5)
    assert found.scan_score == pytest.approx(meta["scan_score"], rel=1e-5) and found.scan_score <= meta["max_score"]
    recon = found.reconstruction
    assert recon.shape == amap.shape and recon.dtype == np.float32
    assert np.isnan(recon[unscored]).all() and np.isfinite(recon[brain & ~unscored]).all()
    assert np.nanstd(recon[brain]) > 0
    whole = _padded(phantom_case_paths(dataset), tmp_path / "longer", 0, tiles=8)
    with pytest.raises(MddpmError, match=r"brain does not fit the model grid .* 60 % of it would be left") as info:
        detect(*whole[:1], run, tmp_path / "out2", mask=whole[1])
    assert "\n" not in str(info.value)


def test_outputs_keep_the_scan_qform_and_sform_codes(detect_run, phantom_case_paths, tmp_path):
    """A scan in MNI space (sform code 4, qform code 2) is written back with those codes."""
    dataset, run = detect_run
    scan, mask = _padded(phantom_case_paths(dataset), tmp_path / "mni", 0, codes=(2, 4))
    out = detect(scan, run, tmp_path / "out", mask=mask, progress=False)
    for name in ("anomaly_map.nii.gz", "segmentation.nii.gz"):
        img = nib.load(str(out / name))
        assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (2, 4)
        np.testing.assert_allclose(img.affine, nib.load(str(scan)).affine)
        np.testing.assert_allclose(img.get_qform(), img.get_sform())


def test_overlay_letters_follow_the_affine():
    from mddpm.viz.overlay import orientation_labels

    assert orientation_labels(np.eye(4)) == {"left": "L", "right": "R", "bottom": "P", "top": "A"}
    lps = np.diag([-2.0, -2.0, 2.0, 1.0])  # x towards the left, y towards the back (e.g. a DICOM-like grid)
    assert orientation_labels(lps) == {"left": "R", "right": "L", "bottom": "A", "top": "P"}


def test_detect_seeds_a_scan_as_predict_seeds_its_case():
    import torch

    from mddpm.inference.detect import scan_case_id
    from mddpm.inference.predict import case_generator

    for path, case in (("data/images/case008_0000.nii.gz", "case008"), ("/x/IXI002-Guys-0828.nii", "IXI002-Guys-0828"),
                       ("scan", "scan")):
        assert scan_case_id(path) == case
    a = case_generator(3141, scan_case_id("data/images/case008_0000.nii.gz"), torch.device("cpu"))
    b = case_generator(3141, "case008", torch.device("cpu"))
    assert torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=b))
