"""Fixtures of the preprocessing tests: small synthetic scans and lesion labels for the input layouts."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def _write_blob_scan(path: Path, seed: int, value: float = 1.0) -> None:
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:24, :24, :20]
    inside = ((z - 12) ** 2 + (y - 12) ** 2 + (x - 10) ** 2) < 64
    data = (inside * (value + 0.1 * rng.random(inside.shape))).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))


def _write_lesion_label(path: Path) -> None:
    data = np.zeros((24, 24, 20), np.uint8)
    data[11:14, 11:14, 9:12] = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))


@pytest.fixture(scope="session")
def write_blob_scan():
    """``write_blob_scan(path, seed, value=1.0)``: a 24x24x20 scan of 2 mm voxels at ``path``, a ball of ``value``
    (plus a little noise drawn from ``seed``) on a zero background."""
    return _write_blob_scan


@pytest.fixture(scope="session")
def write_lesion_label():
    """``write_lesion_label(path)``: a label at ``path`` on the grid of ``write_blob_scan``, one 3x3x3 lesion at the
    centre of the ball."""
    return _write_lesion_label
