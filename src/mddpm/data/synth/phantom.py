"""Phantom datasets: ellipsoid "brains" with bright blob "lesions", written in the mddpm dataset format.

The one generator of the tests (``tests/conftest.py``), the identity check and the memory benchmark
(``benchmarks/memory.py``): seconds to write, no template needed (unlike :mod:`mddpm.data.synth.build`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mddpm.data.dataset import save_dataset_json
from mddpm.io import write_nifti


def make_phantom_dataset(root: Path, shape=(32, 32, 16), n_healthy=6, n_anomalous=4, seed=0,
                         tool: str = "mddpm.data.synth.phantom") -> Path:
    """Ellipsoid "brains" with a bright blob "lesion" in anomalous cases; 2 mm voxels.

    ``shape`` in voxels of 2 mm. Splits: train (all healthy but two), val (1), test (1), lesion_val (half
    the anomalous), lesion_test (the rest); one fold (train, val). ``tool`` is recorded as its provenance.
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
        "provenance": [{"step": "phantom", "tool": tool, "settings": {"seed": seed}}],
    })
    return root
