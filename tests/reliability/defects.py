"""The defects of the bad-input corpus, each written into one file in place: NIfTI volumes (voxels or
header), dataset.json, a prepared cache, a threshold.json."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np

# ---------------------------------------------------------------- defects written into a NIfTI file

def _rewrite(path: Path, fn: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
    img = nib.load(str(path))
    data, affine = fn(np.asarray(img.dataobj).astype(np.float32), img.affine)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def not_nifti(path: Path) -> None:
    path.write_bytes(gzip.compress(b"this is a text file, not a NIfTI image\n"))


def two_d(path: Path) -> None:
    _rewrite(path, lambda a, aff: (a[:, :, a.shape[2] // 2], aff))


def four_d(path: Path) -> None:
    _rewrite(path, lambda a, aff: (np.stack([a, a], axis=-1), aff))


def non_finite(path: Path) -> None:
    def fn(a, aff):
        c = tuple(s // 2 for s in a.shape)
        a[c] = np.nan
        a[c[0] + 1, c[1], c[2]] = np.inf
        return a, aff
    _rewrite(path, fn)


def other_shape(path: Path) -> None:
    _rewrite(path, lambda a, aff: (a[:-2], aff))


def other_affine(path: Path) -> None:
    def fn(a, aff):
        aff = aff.copy()
        aff[:3, 3] += 10.0
        return a, aff
    _rewrite(path, fn)


def all_zero(path: Path) -> None:
    _rewrite(path, lambda a, aff: (np.zeros_like(a), aff))


def non_binary(path: Path) -> None:
    _rewrite(path, lambda a, aff: (a * 3.0 + (a > 0) * 0.5, aff))


def negative(path: Path) -> None:
    _rewrite(path, lambda a, aff: (a - 1.0, aff))


def constant(path: Path) -> None:
    _rewrite(path, lambda a, aff: (np.full_like(a, 0.5), aff))


def edit_keeping_size(path: Path) -> None:
    """A bright block painted into a .nii.gz scan, rewritten at exactly its old size (the gzip header's file
    name field pads it): an edit that size and modification time (restored by the caller) do not show."""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj).copy()
    x, y, z = (s // 4 for s in data.shape)
    data[x:-x, y:-y, z:-z] = data.max()  # compresses well, so there is room to pad
    raw = nib.Nifti1Image(data, img.affine, img.header).to_bytes()
    size = path.stat().st_size
    unpadded = len(gzip.compress(raw, mtime=0))
    assert unpadded + 2 <= size, "the edit must compress better than the scan"
    packed = io.BytesIO()
    with gzip.GzipFile(filename="x" * (size - unpadded - 1), mode="wb", fileobj=packed, mtime=0) as f:
        f.write(raw)
    assert len(packed.getvalue()) == size
    path.write_bytes(packed.getvalue())


def patch_header(path: Path, **fields) -> None:
    """Overwrite header fields in place (what nibabel would not write: a lying size, a zero voxel size)."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    header = nib.Nifti1Header(bytes(raw[:348]))
    for key, value in fields.items():
        header[key] = value
    raw[:348] = header.binaryblock
    path.write_bytes(gzip.compress(bytes(raw)))


def lying_header(path: Path) -> None:
    patch_header(path, dim=[3, 1000, 1000, 1000, 1, 1, 1, 1])


def zero_voxel_size(path: Path) -> None:
    img = nib.load(str(path))
    srow = np.asarray(img.affine[0], dtype=np.float32).copy()
    srow[0] = 0.0
    patch_header(path, qform_code=0, sform_code=1, srow_x=srow, srow_y=img.affine[1], srow_z=img.affine[2])


def rename_case(dataset_json: Path, old: str, new: str) -> None:
    """Give case ``old`` the id ``new`` in dataset.json: its entry, every split and fold."""
    meta = json.loads(dataset_json.read_text())
    for c in meta["cases"]:
        c["id"] = new if c["id"] == old else c["id"]
    for ids in [*meta["splits"].values(), *(ids for fold in meta.get("folds", []) for ids in fold.values())]:
        ids[:] = [new if i == old else i for i in ids]
    dataset_json.write_text(json.dumps(meta))


def fractional(path: Path) -> None:
    _rewrite(path, lambda a, aff: (a * 0.5, aff))


def complex_voxels(path: Path) -> None:
    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj).astype(np.complex64), img.affine), str(path))


def permute_axes(path: Path) -> None:
    """Voxel axes (x, y, z) -> (z, x, y), the affine following: the same scan, stored in another orientation."""
    _rewrite(path, lambda a, aff: (a.transpose(2, 0, 1), aff[:, [2, 0, 1, 3]]))


def triple_spacing(path: Path) -> None:
    """The header claims voxels three times their size (the voxels unchanged)."""
    def fn(a, aff):
        aff = aff.copy()
        aff[:3, :3] *= 3.0
        return a, aff
    _rewrite(path, fn)


def _edit_json(path: Path, fn: Callable[[dict], None]) -> None:
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def format_version_99(dataset_json: Path) -> None:
    _edit_json(dataset_json, lambda m: m.update(format_version=99))


def unknown_label_encoding(dataset_json: Path) -> None:
    _edit_json(dataset_json, lambda m: m.update(label_encoding="rainbow"))


def role_as_list(dataset_json: Path) -> None:
    _edit_json(dataset_json, lambda m: m["cases"][0].update(role=["healthy"]))


def nan_threshold(threshold_json: Path) -> None:
    _edit_json(threshold_json, lambda m: m.update(threshold=float("nan")))
