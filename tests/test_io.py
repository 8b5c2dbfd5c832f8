"""Safe file handling: case ids as file names, --force that removes only our own files, NIfTI headers
checked before any allocation, JSON that is an object."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from mddpm.data.dataset import load_dataset
from mddpm.errors import MddpmError
from mddpm.io import case_file, case_id_problem, check_output_folder, clear_outputs, read_json, read_nifti, write_nifti
from reliability.defects import patch_header


@pytest.mark.parametrize("cid", ["../escape", "/abs/path", "a/b", "a\\b", "..", ".hidden", "a\x00b", "a\nb", "",
                                 "x" * 200, 7, None])
def test_unsafe_case_ids_are_refused(cid):
    assert case_id_problem(cid) is not None


@pytest.mark.parametrize("cid", ["case000", "IXI002-Guys-0828", "BraTS2021_00000", "sub 1", "a..b", "ü"])
def test_ordinary_case_ids_are_accepted(cid):
    assert case_id_problem(cid) is None


def test_case_file_stays_inside_its_folder(tmp_path):
    assert case_file(tmp_path, "case000", ".nii.gz") == tmp_path / "case000.nii.gz"
    with pytest.raises(MddpmError, match="path separator"):
        case_file(tmp_path, "../case000", ".nii.gz")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "recon").symlink_to(tmp_path)  # a link leading out of the folder
    with pytest.raises(MddpmError, match="resolves outside the folder"):
        case_file(tmp_path / "out", "case000", ".nii.gz", "recon")


def test_force_removes_only_owned_files_and_refuses_foreign_ones(tmp_path):
    out = tmp_path / "out"
    assert check_output_folder(out, False, ["*.nii.gz"]) == []  # absent: fine
    (out / "recon").mkdir(parents=True)
    for name in ("a.nii.gz", "recon/a.nii.gz", "predict.json", ".predict.x1.tmp.json"):
        (out / name).write_text("ours")
    with pytest.raises(MddpmError, match="already exists"):
        check_output_folder(out, False, ["predict.json", "a.nii.gz", "recon/a.nii.gz"])
    (out / "scan_0000.nii.gz").write_text("theirs")
    with pytest.raises(MddpmError, match="1 file\\(s\\) mddpm did not write there \\(e.g. scan_0000.nii.gz\\)"):
        check_output_folder(out, True, ["predict.json", "a.nii.gz", "recon/a.nii.gz"])
    assert (out / "scan_0000.nii.gz").read_text() == "theirs"
    (out / "scan_0000.nii.gz").unlink()
    with pytest.raises(MddpmError, match="e.g. recon/a.nii.gz"):  # "*" stays within one folder's names
        check_output_folder(out, True, ["predict.json", "*a.nii.gz"])
    earlier = check_output_folder(out, True, ["predict.json", "**/*a.nii.gz"])  # "**": any number of folders
    clear_outputs(out, earlier)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == []
    assert out.is_dir()


def test_force_never_follows_a_symlinked_folder(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.nii.gz").write_text("theirs")
    out = tmp_path / "out"
    out.mkdir()
    (out / "recon").symlink_to(elsewhere)
    with pytest.raises(MddpmError, match="e.g. recon\\)"):
        check_output_folder(out, True, ["recon/*"])
    assert (elsewhere / "a.nii.gz").read_text() == "theirs"


def _lying_nifti(path, data, **fields):
    """A NIfTI file whose header fields are then overwritten as given (what nibabel would not write)."""
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    patch_header(path, **fields)
    return path


def test_a_header_claiming_more_than_the_file_holds_is_refused_before_reading(tmp_path):
    path = _lying_nifti(tmp_path / "a.nii.gz", np.ones((4, 4, 4), np.float32), dim=[3, 1000, 1000, 1000, 1, 1, 1, 1])
    with pytest.raises(MddpmError, match="header claims 1000000000 voxels"):
        read_nifti(path)


@pytest.mark.parametrize("size", [0.0, np.nan, 0.001])
def test_degenerate_affines_are_refused(tmp_path, size):
    path = _lying_nifti(tmp_path / "a.nii.gz", np.ones((4, 4, 4), np.float32), qform_code=0, sform_code=1,
                        srow_x=[size, 0, 0, 0])
    with pytest.raises(MddpmError, match="NaN or Inf entries" if np.isnan(size) else "degenerate affine: voxel size"):
        read_nifti(path)


def test_complex_voxels_are_refused(tmp_path):
    path = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.complex64), np.eye(4)), str(path))
    with pytest.raises(MddpmError, match="unsupported voxel type complex64"):
        read_nifti(path)


def test_read_json_wants_an_object(tmp_path):
    path = tmp_path / "a.json"
    for text, message in (("[]", "not a JSON object"), ("[" * 100000 + "]" * 100000, "nested too deeply|not valid")):
        path.write_text(text)
        with pytest.raises(MddpmError, match=message):
            read_json(path)


@pytest.mark.parametrize("edit, message", [
    (lambda m: [m], "not a JSON object"),
    (lambda m: {**m, "splits": ["train"]}, '"splits" must map'),
    (lambda m: {**m, "folds": {"train": []}}, '"folds" must be a list'),
    (lambda m: {**m, "cases": {c["id"]: c for c in m["cases"]}}, '"cases" must be a list'),
    (lambda m: {**m, "cases": [{**m["cases"][0], "image": None}, *m["cases"][1:]]}, "no image path"),
    (lambda m: {**m, "cases": [{**m["cases"][0], "role": ["healthy"]}, *m["cases"][1:]]}, "role"),
    (lambda m: {**m, "format_version": 99}, "format_version 99"),
    (lambda m: {**m, "label_encoding": "rgb"}, "label_encoding 'rgb'"),
    (lambda m: {**m, "geometry": {"spacing_mm": ["a", 2, 2]}}, "geometry.spacing_mm"),
    (lambda m: {**m, "cases": [{**m["cases"][0], "id": "../../masks/case001"}, *m["cases"][1:]]}, "path separator"),
])
def test_the_loader_refuses_what_verify_refuses(phantom_dataset, edit, message):
    path = phantom_dataset / "dataset.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(MddpmError, match=message) as err:
        load_dataset(phantom_dataset)
    assert str(err.value).startswith(str(path))


def test_write_then_read_a_nifti_keeps_values(tmp_path):
    data = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
    write_nifti(tmp_path / "a.nii.gz", data, np.diag([2.0, 2.0, 2.0, 1.0]))
    np.testing.assert_array_equal(read_nifti(tmp_path / "a.nii.gz")[0], data)


def test_written_niftis_carry_units_and_both_transforms(tmp_path):
    """Viewers place a file by its qform or sform: both are set (code 1, scanner), units mm."""
    affine = np.array([[0, 0, -1.5, 90], [-1.2, 0, 0, 120], [0, 1.2, 0, -70], [0, 0, 0, 1.0]])
    write_nifti(tmp_path / "a.nii.gz", np.zeros((4, 5, 6), np.uint8), affine)
    header = nib.load(str(tmp_path / "a.nii.gz")).header
    assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 1
    assert header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_allclose(header.get_qform(), affine, atol=1e-5)
    np.testing.assert_allclose(header.get_sform(), affine, atol=1e-5)


def test_a_volume_larger_than_the_free_memory_is_refused_before_allocation():
    from mddpm.checks import check_memory
    from mddpm.errors import InputError

    with pytest.raises(InputError, match=r"x.nii.gz: 1000000000000 voxels need about 14901.2 GB to process"):
        check_memory(10**12, "x.nii.gz")
    check_memory(1000, "x.nii.gz")  # a brain scan's size passes
