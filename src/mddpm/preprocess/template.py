"""The registration target: a brain-only template image and its brain mask on the output grid.

Default: the MNI152 2009a T1 template with its brain mask, both inside the nilearn wheel (no
download). Any other template (for example the SRI24 ``T1_brain.nii`` the published pipeline
used) is read from a file; without a mask file its brain is ``template > 0`` (a skull-stripped
template is expected).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mddpm.errors import MddpmError
from mddpm.io import file_sha256
from mddpm.preprocess import steps


@dataclass(frozen=True)
class Template:
    image: sitk.Image  # float32, template x brain mask, on ``grid``
    mask: sitk.Image  # uint8 {0, 1}, on ``grid``
    grid: steps.Grid  # the output grid of registered cases (reoriented, ``spacing_mm`` voxels)
    space: str  # short name for dataset.json geometry ("MNI152" or the file's name)
    fingerprint: dict  # what identifies the template (file hashes or the nilearn version)


def template_fingerprint(path: str | None, mask_path: str | None) -> dict:
    """Identity of a template without loading it (used in the settings hash)."""
    if path is None:
        import nilearn
        from nilearn.datasets import struct

        return {"template": "nilearn MNI152 2009a T1 x brain mask, 1 mm", "file": Path(struct.MNI152_FILE_PATH).name,
                "nilearn": nilearn.__version__}
    for p in (path, mask_path):
        if p is not None and not Path(p).is_file():
            raise MddpmError(f"{p}: template file not found")
    return {"template": str(Path(path).resolve()), "sha256": file_sha256(path),
            "mask": str(Path(mask_path).resolve()) if mask_path else "template > 0",
            "mask_sha256": file_sha256(mask_path) if mask_path else None}


@functools.lru_cache(maxsize=2)
def load_template(path: str | None = None, mask_path: str | None = None, orientation: str = "LPS",
                  spacing_mm: float = 1.0) -> Template:
    """Load, reorient and resample a template to ``spacing_mm`` (B-spline image, nearest mask);
    the image is multiplied by its mask. Cached per process."""
    fingerprint = template_fingerprint(path, mask_path)
    if path is None:
        from nilearn import datasets

        t1 = datasets.load_mni152_template(resolution=1)
        brain = datasets.load_mni152_brain_mask(resolution=1)
        image = steps.from_nifti_array(np.asarray(t1.get_fdata(), dtype=np.float32), t1.affine)
        mask = steps.from_nifti_array((np.asarray(brain.get_fdata()) > 0).astype(np.uint8), brain.affine)
        space = "MNI152"
    else:
        image = steps.read_volume(path)
        mask = steps.binary_mask(steps.read_volume(mask_path, label=True) if mask_path else image)
        space = Path(path).name.split(".")[0]
    image = steps.reorient(image, orientation)
    mask = steps.reorient(mask, orientation)
    grid = steps.isotropic_grid(image, spacing_mm)
    image = steps.resample(image, grid, interpolator=sitk.sitkBSpline)
    mask = steps.binary_mask(steps.resample(mask, grid, interpolator=sitk.sitkNearestNeighbor))
    if not sitk.GetArrayViewFromImage(mask).any():
        raise MddpmError(f"{mask_path or path or 'MNI152'}: template brain mask is empty (on the template's grid)")
    image = sitk.Mask(sitk.Maximum(image, 0.0), mask)
    return Template(image=image, mask=mask, grid=grid, space=space, fingerprint=fingerprint)
