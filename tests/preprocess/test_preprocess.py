"""mddpm preprocess: registration accuracy, bias correction, geometry, resume, failures, mask sources.

The "raw" scans are made from the MNI152 template (read from the nilearn wheel) seen through a
known affine (rotation 10 deg, shift 10 mm, scale up to 5 %), stored with another axis order and
anisotropic voxels, multiplied by a smooth bias field. Everything runs at 3 mm to stay fast. The
fixtures that make them (``template_world``, ``make_raw_scan``, ``preprocess_settings``) are in
tests/conftest.py: `mddpm detect --preprocess` is tested on the same scans.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mddpm.cli.main import main
from mddpm.data.dataset import load_dataset
from mddpm.errors import MddpmError
from mddpm.preprocess import CaseInputs, N4Settings, PreprocessSettings, find_cases, preprocess_case, steps
from mddpm.preprocess.template import load_template

SPACING = 3.0  # the template world's voxel size (TEMPLATE_SPACING in tests/conftest.py)
FAST_N4 = N4Settings(iterations=(50, 50), shrink=2)


def _dice_on(grid_img: sitk.Image, a: sitk.Image, b: sitk.Image) -> float:
    """Dice of masks a and b after resampling both (nearest) onto ``grid_img``'s grid: world space."""
    g = steps.Grid.of(grid_img)
    x = sitk.GetArrayViewFromImage(steps.resample(a, g, interpolator=sitk.sitkNearestNeighbor)) > 0
    y = sitk.GetArrayViewFromImage(steps.resample(b, g, interpolator=sitk.sitkNearestNeighbor)) > 0
    return float(2 * (x & y).sum() / (x.sum() + y.sum()))


def _bias_cv(out: dict, world) -> float:
    """Coefficient of variation of output / clean anatomy in the eroded white matter: 0 for a
    perfect bias correction (up to noise and interpolation)."""
    clean = steps.resample(world.clean, steps.Grid.of(out["image"]), interpolator=sitk.sitkLinear)
    o, c = sitk.GetArrayFromImage(out["image"]), sitk.GetArrayFromImage(clean)
    inner = sitk.GetArrayFromImage(sitk.BinaryErode(out["mask"], [2, 2, 2])) > 0
    region = inner & (c > 0.25) & (c < 0.45)  # white matter in the T2-like contrast
    assert region.sum() > 1000
    ratio = o[region] / c[region]
    return float(ratio.std() / ratio.mean())


def test_registration_recovers_the_template_and_n4_flattens_the_bias(template_world, make_raw_scan, preprocess_settings,
                                                                     tmp_path):
    paths = make_raw_scan(tmp_path, "sub1", seed=1)
    case = CaseInputs("sub1", paths["image"], paths["mask"])
    raw_mask = sitk.ReadImage(str(paths["mask"]))
    template_mask = load_template(str(template_world.template), str(template_world.template_mask), "LPS", SPACING).mask
    assert _dice_on(template_mask, raw_mask, template_mask) < 0.87  # the known affine moved the brain

    plain, _ = preprocess_case(case, preprocess_settings(bias_correction=False))
    corrected, info = preprocess_case(case, preprocess_settings(n4=FAST_N4))
    for out in (plain, corrected):
        assert _dice_on(template_mask, out["mask"], template_mask) > 0.9
    assert info["qc"]["template_dice"] > 0.9
    assert _bias_cv(corrected, template_world) < 0.75 * _bias_cv(plain, template_world)
    # the raw scan's bias field spans about 0.6-1.6; N4 found a field of comparable range
    assert info["n4"]["field_max"] / info["n4"]["field_min"] > 1.5

    img, mask = corrected["image"], corrected["mask"]
    assert img.GetSpacing() == (SPACING,) * 3 and img.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)  # LPS
    a, m = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(mask)
    assert a.dtype == np.float32 and set(np.unique(m)) == {0, 1}
    assert (a[m == 0] == 0).all() and (a[m == 1] >= 0).all()
    for axis in range(3):  # inclusive crop: the brain touches every face of the box
        other = tuple(x for x in range(3) if x != axis)
        assert m.any(axis=other)[0] and m.any(axis=other)[-1]


def test_a_failed_registration_fails_the_case(make_raw_scan, preprocess_settings, tmp_path, monkeypatch):
    paths = make_raw_scan(tmp_path, "w1", seed=13)

    def off_by_60_mm(fixed, moving, settings):  # what a diverged optimiser can return
        return sitk.TranslationTransform(3, (60.0, 0.0, 0.0)), {"metric": 0.0}

    monkeypatch.setattr(steps, "register_affine", off_by_60_mm)
    message = r"w1.nii.gz: registration_check: registered brain overlaps .* by Dice 0\.[0-5]"
    with pytest.raises(MddpmError, match=message):
        preprocess_case(CaseInputs("w1", paths["image"], paths["mask"]), preprocess_settings(bias_correction=False))


def test_skip_registration_keeps_world_position_and_reads_nrrd_and_mha(make_raw_scan, preprocess_settings, tmp_path):
    for name, suffix in (("a", ".nrrd"), ("b", ".mha")):
        paths = make_raw_scan(tmp_path, name, seed=2, suffix=suffix)
        raw_mask = sitk.ReadImage(str(paths["mask"]))
        out, info = preprocess_case(CaseInputs(name, paths["image"], paths["mask"]),
                                    preprocess_settings(register=False, bias_correction=False))
        assert "registration" not in info and out["image"].GetSpacing() == (SPACING,) * 3
        assert out["image"].GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)  # reoriented from (y, z, x) storage
        assert _dice_on(out["mask"], raw_mask, out["mask"]) > 0.9  # same place in the world
        raw_in_out = steps.resample(sitk.ReadImage(str(paths["image"]), sitk.sitkFloat32), steps.Grid.of(out["image"]),
                                    interpolator=sitk.sitkLinear)
        m = sitk.GetArrayViewFromImage(sitk.BinaryErode(out["mask"], [1, 1, 1])) > 0
        x, y = sitk.GetArrayViewFromImage(out["image"])[m], sitk.GetArrayViewFromImage(raw_in_out)[m]
        assert np.corrcoef(x, y)[0, 1] > 0.9  # the intensities came along, not just the mask


def _run_cli(*args) -> int:
    return main(["preprocess", *map(str, args), "--spacing", str(SPACING), "--no-progress"])


def test_cli_failures_resume_and_force(template_world, make_raw_scan, tmp_path, capsys):
    make_raw_scan(tmp_path, "h1", seed=3)
    make_raw_scan(tmp_path, "t1", seed=4, label_value=2)
    broken = tmp_path / "scans" / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b this is not a NIfTI file")
    (tmp_path / "masks" / "broken.nii.gz").write_bytes(broken.read_bytes())
    out = tmp_path / "out"
    common = [tmp_path / "scans", out, "--masks", tmp_path / "masks", "--labels", tmp_path / "labels",
              "--template", template_world.template, "--template-mask", template_world.template_mask, "--skip-n4"]

    assert _run_cli(*common) == 2
    err = capsys.readouterr().err
    assert str(broken) in err and "cannot read" in err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1  # one line for the one failure
    ds = load_dataset(out)
    assert sorted(ds.cases) == ["h1", "t1"]
    assert ds.cases["h1"].role == "healthy" and ds.cases["h1"].label is None
    assert ds.cases["t1"].role == "anomalous" and ds.cases["t1"].label.is_file()
    assert ds.splits == {"train": ["h1"], "test": ["t1"]}
    assert ds.meta["label_encoding"] == "gt0"  # label value 2 kept
    assert set(np.unique(nib.load(str(ds.cases["t1"].label)).get_fdata())) == {0, 2}
    steps_done = [p["step"] for p in ds.meta["provenance"]]
    assert steps_done == ["inputs", "reorient", "resample", "brain_mask", "registration", "crop", "splits"]
    assert main(["verify", str(out)]) == 0
    capsys.readouterr()

    files = sorted(p for p in out.rglob("*")
                   if p.is_file() and p.name != "dataset.json" and p.parent.name != ".preprocess")
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    assert _run_cli(*common) == 2  # the broken file still fails; the others are skipped
    cap = capsys.readouterr()
    assert "0 processed" in cap.out and "2 already done" in cap.out
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes

    # other settings: refused without --force, nothing touched
    assert _run_cli(*common, "--skip-registration") == 2
    assert "use --force" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    assert _run_cli(*common, "--skip-registration", "--force") == 2
    assert load_dataset(out).meta["geometry"]["space"] == "native"
    assert all(p.stat().st_mtime_ns != mtimes[p] for p in files)


def test_parallel_workers_with_n4_and_a_bad_mask(make_raw_scan, tmp_path, capsys):
    make_raw_scan(tmp_path, "a", seed=9)
    make_raw_scan(tmp_path, "b", seed=10)
    bad = make_raw_scan(tmp_path, "c", seed=11)
    flat = sitk.Image([40, 30], sitk.sitkUInt8)  # a 2-D "mask"
    sitk.WriteImage(flat, str(bad["mask"]))
    out = tmp_path / "out"
    assert _run_cli(tmp_path / "scans", out, "--masks", tmp_path / "masks", "--skip-registration", "--workers", 2,
                    "--n4-iterations", "20,20", "--n4-shrink", 2) == 2
    err = capsys.readouterr().err
    assert f"{bad['mask']}: not a 3-D image" in err
    ds = load_dataset(out)
    assert sorted(ds.cases) == ["a", "b"]
    n4 = next(p for p in ds.meta["provenance"] if p["step"] == "n4")["settings"]
    assert n4["iterations"] == [20, 20] and n4["shrink"] == 2
    for cid in ("a", "b"):
        marker = json.loads((out / ".preprocess" / f"{cid}.json").read_text())
        assert marker["n4"]["iterations_last_level"] <= 21 and set(marker["seconds"]) >= {"read", "n4", "crop"}


def _rewrite(path: Path, fn) -> None:
    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(fn(np.asarray(img.dataobj, dtype=np.float32)), img.affine), str(path))


def _nan_voxel(a):
    a[tuple(s // 2 for s in a.shape)] = np.nan
    return a


BAD_INPUTS = {  # defect -> (which file, how, what the error says)
    "nan": ("image", lambda p: _rewrite(p, _nan_voxel), "NaN or Inf"),
    "truncated": ("image", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "cannot read as NIfTI"),
    "constant": ("image", lambda p: _rewrite(p, lambda a: np.full_like(a, 0.5)), "constant (0.5) inside the brain"),
    "negative": ("image", lambda p: _rewrite(p, lambda a: a - 10.0), "% of the voxels inside the brain are negative"),
    "empty-mask": ("mask", lambda p: _rewrite(p, np.zeros_like), "is empty on the scan's grid"),
}


@pytest.mark.parametrize("defect", sorted(BAD_INPUTS))
def test_bad_scan_is_refused_and_a_fresh_output_stays_absent(make_raw_scan, tmp_path, capsys, defect):
    target, apply, message = BAD_INPUTS[defect]
    paths = make_raw_scan(tmp_path, "c1", seed=12)
    apply(paths[target])
    out = tmp_path / "out"
    assert _run_cli(tmp_path / "scans", out, "--masks", tmp_path / "masks", "--skip-registration", "--skip-n4") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mddpm preprocess: error: {paths['image']}")
    assert message in err[0]
    assert not out.exists()


def test_output_folder_with_foreign_files_is_refused(make_raw_scan, tmp_path, capsys):
    make_raw_scan(tmp_path, "h1", seed=5)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _run_cli(tmp_path / "scans", out, "--masks", tmp_path / "masks", "--skip-registration") == 2
    assert "did not write" in capsys.readouterr().err and not (out / "dataset.json").exists()


def test_missing_masks_without_hdbet_is_a_clear_error(make_raw_scan, tmp_path, capsys, monkeypatch):
    paths = make_raw_scan(tmp_path, "h1", seed=6)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert _run_cli(tmp_path / "scans", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--masks DIR" in err and "HD-BET" in err
    assert not (tmp_path / "out").exists()

    # a mask folder without this case's mask: that case fails, naming where the mask was expected
    paths["mask"].unlink()
    make_raw_scan(tmp_path, "h2", seed=7)
    assert _run_cli(tmp_path / "scans", tmp_path / "out", "--masks", tmp_path / "masks", "--skip-registration",
                    "--skip-n4") == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'scans' / 'h1.nii.gz'}: no brain mask {tmp_path / 'masks' / 'h1.nii.gz'}" in err
    assert sorted(load_dataset(tmp_path / "out").cases) == ["h2"]


FAKE_HDBET = """#!{python}
import sys
import SimpleITK as sitk
args = sys.argv[1:]
if "--help" in args:
    print("usage: hd-bet -i INPUT -o OUTPUT [--save_bet_mask] [--no_bet_image] [--disable_tta]")
    sys.exit(0)
img = sitk.ReadImage(args[args.index("-i") + 1])
out = args[args.index("-o") + 1]
sitk.WriteImage(sitk.Cast(img > 0.2, sitk.sitkUInt8), out[:-7] + "_bet.nii.gz")
"""


def test_hdbet_on_path_provides_the_masks(make_raw_scan, tmp_path, capsys, monkeypatch):
    make_raw_scan(tmp_path, "h1", seed=8)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "hd-bet"
    exe.write_text(FAKE_HDBET.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert _run_cli(tmp_path / "scans", tmp_path / "out", "--skip-registration", "--skip-n4") == 0
    capsys.readouterr()
    ds = load_dataset(tmp_path / "out")
    assert ds.meta["provenance"][3]["settings"]["source"] == "hd-bet"
    mask = nib.load(str(ds.cases["h1"].mask)).get_fdata()
    assert mask.sum() > 1000


def test_find_cases_ids_pattern_and_duplicates(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("sub-01_T2w.nii.gz", "sub-02_T2w.nrrd", "sub-02_T1w.nii.gz", "dup.nii", "dup.nii.gz", "notes.txt"):
        (scans / name).write_bytes(b"")
    cases, problems = find_cases(scans)
    assert sorted(c.id for c in cases) == ["sub-01_T2w", "sub-02_T1w", "sub-02_T2w"]
    assert len(problems) == 1 and "dup" in problems[0] and "2 files" in problems[0]
    cases, problems = find_cases(scans, pattern="*_T2w.*")
    assert sorted(c.id for c in cases) == ["sub-01_T2w", "sub-02_T2w"] and not problems
    with pytest.raises(MddpmError, match="no scans found"):
        find_cases(scans, pattern="*.mha")


def test_settings_are_validated():
    with pytest.raises(MddpmError, match="seed"):
        steps.RegistrationSettings(seed=0)
    with pytest.raises(MddpmError, match="orientation"):
        PreprocessSettings(orientation="XYZ")
    with pytest.raises(MddpmError, match="mask source"):
        PreprocessSettings(mask_source="magic")
