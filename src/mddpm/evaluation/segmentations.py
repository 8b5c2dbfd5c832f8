"""``mddpm evaluate --write-segmentations``: each test case's final segmentation in its scan's own geometry.

The segmentation is the one the metrics count (post-processed map above the default rule's threshold,
small components removed) on the model grid; it is resampled (nearest neighbour) onto the voxel grid of
the dataset's image of that case, kept inside its brain mask, and written as
``OUT/segmentations/<case>.nii.gz`` (uint8 0/1, the image's affine), ready to overlay on that image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mddpm.data.cache import Prepared
from mddpm.data.dataset import Dataset, load_dataset
from mddpm.data.volume import to_original_space
from mddpm.errors import MddpmError
from mddpm.io import case_file, open_nifti, read_nifti, write_nifti


def source_dataset(meta: dict, folder: Path) -> Dataset:
    """The dataset the maps of ``folder`` (its ``predict.json`` is ``meta``) were predicted from."""
    root = meta.get("dataset")
    if not isinstance(root, str) or not (Path(root) / "dataset.json").is_file():
        raise MddpmError(f"{folder / 'predict.json'}: its dataset {root!r} is not found; --write-segmentations "
                         "needs the scans the maps come from")
    return load_dataset(root)


def write_native_segmentation(out: Path, dataset: Dataset, prepared: Prepared, case_id: str,
                              segmentation: np.ndarray) -> Path:
    """Write ``segmentation`` ([Z, H, W] bool on the prepared grid) on the grid of the case's image."""
    case = dataset.cases.get(case_id)
    if case is None:
        raise MddpmError(f"{dataset.root / 'dataset.json'}: has no case {case_id!r} (the maps' dataset changed?)")
    image = open_nifti(case.image)
    brain, affine = read_nifti(case.mask)
    native = to_original_space(segmentation.astype(np.float32), prepared.affines[prepared.index(case_id)],
                               brain.shape, affine, order=0) > 0.5
    if tuple(image.shape[:3]) != brain.shape:
        raise MddpmError(f"{case.mask}: shape {brain.shape} differs from its image {case.image}")
    path = case_file(out, case_id, ".nii.gz", "segmentations")
    write_nifti(path, (native & (brain > 0)).astype(np.uint8), affine)
    return path
