"""Fixtures of the evaluation tests: maps folders, as `mddpm predict` writes them, for the phantom dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mddpm.data.cache import load_prepared
from mddpm.data.dataset import load_dataset
from mddpm.data.grids import GridSpec
from mddpm.data.prepare import prepare_dataset
from mddpm.io import write_json, write_nifti

GRID = GridSpec(crop_mm=(64.0, 64.0, 32.0), spacing_mm=2.0, curvature_flow=False)  # the phantom's own 32x32x16


def _write_maps(dataset: Path, prepared_dir: Path, split: str, out: Path, seed: int) -> Path:
    """A maps folder as ``mddpm predict`` writes it: |x - x̂| with a reconstruction that misses lesions."""
    prepared = load_prepared(prepared_dir)
    rng = np.random.default_rng(seed)
    ids = load_dataset(dataset).splits[split]
    for cid in ids:
        image, mask, label = prepared.volume(cid)
        recon = np.where(label > 0, 0.55, image) + rng.normal(0, 0.03, image.shape) * (mask > 0)
        recon = np.clip(recon, 0, None).astype(np.float32)
        affine = prepared.affines[prepared.index(cid)]
        write_nifti(out / f"{cid}.nii.gz", np.abs(image - recon).transpose(1, 2, 0), affine)
        write_nifti(out / "recon" / f"{cid}.nii.gz", recon.transpose(1, 2, 0), affine)
    write_json(out / "predict.json", {
        "prepared": str(prepared_dir.resolve()), "dataset": str(dataset.resolve()), "split": split, "case_ids": ids,
        "run": "/runs/phantom", "config": {"method": "mddpm", "preset": "test"}, "settings": {"t": 499}})
    return out


@pytest.fixture(scope="session")
def write_maps():
    """``write_maps(dataset, prepared_dir, split, out, seed)``: a maps folder of ``split`` at ``out``; returns it."""
    return _write_maps


@pytest.fixture
def phantom_maps(phantom_dataset, tmp_path):
    """Maps folders of the phantom dataset on its own grid, by name: "val" (lesion_val), "test" (lesion_test) and
    "healthy" (val)."""
    prepared_dir = prepare_dataset(phantom_dataset, GRID, workers=1, progress=False)
    return {name: _write_maps(phantom_dataset, prepared_dir, split, tmp_path / "maps" / name, seed)
            for seed, (name, split) in enumerate([("val", "lesion_val"), ("test", "lesion_test"), ("healthy", "val")])}
