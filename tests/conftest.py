"""Shared fixtures: tiny phantom datasets written to disk in the mddpm dataset format, and the browser."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mddpm.data.dataset import save_dataset_json
from mddpm.io import write_nifti


def make_phantom_dataset(root: Path, shape=(32, 32, 16), n_healthy=6, n_anomalous=4, seed=0) -> Path:
    """Ellipsoid "brains" with a bright blob "lesion" in anomalous cases; 2 mm voxels.

    Splits: train (4 healthy), val (1), test (1), lesion_val (half the anomalous), lesion_test (rest).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    brain = (zz**2 / 0.8 + yy**2 / 0.7 + xx**2 / 0.9) < 1
    cases, healthy, anomalous = [], [], []
    for i in range(n_healthy + n_anomalous):
        cid = f"case{i:03d}"
        img = np.where(brain, 0.5 + 0.1 * rng.standard_normal(shape), 0).astype(np.float32)
        img[brain] += 0.3 * (zz[brain] > 0)
        label_rel = None
        role = "healthy" if i < n_healthy else "anomalous"
        if role == "anomalous":
            c = rng.uniform(-0.3, 0.3, 3)
            lesion = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) < 0.09
            lesion &= brain
            img[lesion] = 1.2
            label_rel = f"labels/{cid}.nii.gz"
            write_nifti(root / label_rel, lesion.astype(np.uint8), affine)
            anomalous.append(cid)
        else:
            healthy.append(cid)
        write_nifti(root / f"images/{cid}_0000.nii.gz", img, affine)
        write_nifti(root / f"masks/{cid}.nii.gz", brain.astype(np.uint8), affine)
        cases.append({"id": cid, "role": role, "group": "blob" if role == "anomalous" else None,
                      "image": f"images/{cid}_0000.nii.gz", "mask": f"masks/{cid}.nii.gz", "label": label_rel})
    half = len(anomalous) // 2
    save_dataset_json(root, {
        "name": "phantom", "modality": "T2",
        "geometry": {"space": "phantom", "spacing_mm": [2.0, 2.0, 2.0], "shape": list(shape)},
        "cases": cases,
        "splits": {"train": healthy[:-2], "val": healthy[-2:-1], "test": healthy[-1:],
                   "lesion_val": anomalous[:half], "lesion_test": anomalous[half:]},
        "folds": [{"train": healthy[:-2], "val": healthy[-2:-1]}],
        "label_encoding": "binary",
        "provenance": [{"step": "phantom", "tool": "tests/conftest.py", "settings": {"seed": seed}}],
    })
    return root


@pytest.fixture
def phantom_dataset(tmp_path) -> Path:
    return make_phantom_dataset(tmp_path / "phantom")


BROWSERS = ("chromium", "chromium-browser", "google-chrome")
NO_BROWSER = "no chromium on PATH"
ENABLE_BROWSER = "apt-get install -y chromium (`make test` does it when run as root), then run the tests again"


@pytest.fixture
def browser() -> str:
    """Path of a Chromium for headless rendering; skips without one, but fails under CI=true."""
    found = next(filter(None, map(shutil.which, BROWSERS)), None)
    if found is None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{NO_BROWSER} and CI=true: the browser test must run here; {ENABLE_BROWSER}")
        pytest.skip(NO_BROWSER)
    return found


def pytest_terminal_summary(terminalreporter) -> None:
    """One line at the end of the run when the browser test was skipped, saying how to enable it."""
    skipped = terminalreporter.stats.get("skipped", [])
    if any(NO_BROWSER in str(report.longrepr) for report in skipped):
        terminalreporter.write_line(f"the browser test was SKIPPED ({NO_BROWSER}); to run it: {ENABLE_BROWSER}",
                                    yellow=True, bold=True)
