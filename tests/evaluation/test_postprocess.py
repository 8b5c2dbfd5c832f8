"""Post-processing against scipy/skimage: erosion, component removal, the pipeline; the settings record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.measure import label as sk_label
from skimage.measure import regionprops

from mddpm.evaluation import postprocess
from mddpm.evaluation.postprocess import (
    PostprocessSettings,
    erode_mask_axial,
    postprocess_map,
    published_erosion_iterations,
    remove_small_components,
)

CROSS = ndimage.generate_binary_structure(2, 1)


def scipy_erosion(mask: np.ndarray, iterations: int) -> np.ndarray:
    return np.stack([ndimage.binary_erosion(s > 0, structure=CROSS, iterations=iterations) for s in mask])


def blobs(rng, shape, p=0.5, sigma=1.5) -> np.ndarray:
    """Random smooth blobs covering about ``1 - p`` of the volume."""
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    return field > np.quantile(field, p)


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_erosion_matches_scipy_including_borders(iterations):
    rng = np.random.default_rng(iterations)
    mask = blobs(rng, (6, 23, 17), p=0.3).astype(np.uint8)
    mask[0] = 1  # a full slice: scipy erodes it from the image border
    mask[1, :, :3] = 1
    got = erode_mask_axial(torch.from_numpy(mask), iterations)
    assert got.dtype == torch.bool
    np.testing.assert_array_equal(got.numpy(), scipy_erosion(mask, iterations))
    assert not got[0, 0].any() and got[0, iterations:-iterations, iterations:-iterations].all()


def test_erosion_batched_and_nonbinary_masks():
    rng = np.random.default_rng(0)
    mask = rng.random((3, 4, 12, 12)) * blobs(rng, (3, 4, 12, 12), p=0.2)  # values in (0, 1): binarised with > 0
    got = erode_mask_axial(torch.from_numpy(mask), 2).numpy()
    want = np.stack([scipy_erosion(m, 2) for m in mask])
    np.testing.assert_array_equal(got, want)


def test_erosion_zero_iterations_keeps_mask():
    mask = torch.tensor([[[0, 1, 1], [1, 1, 0]]])
    assert torch.equal(erode_mask_axial(mask, 0), mask > 0)


def test_postprocess_map_is_the_published_pipeline():
    """Mask eroded per axial slice W//25 times, multiplied, then the 5³ median (in that order)."""
    rng = np.random.default_rng(3)
    shape = (8, 20, 50)  # W = 50 -> 2 erosion steps
    score = rng.random(shape).astype(np.float32)
    mask = blobs(rng, shape, p=0.3, sigma=2.0).astype(np.uint8)
    assert published_erosion_iterations(50) == 2 and published_erosion_iterations(96) == 3
    want = ndimage.median_filter(score * scipy_erosion(mask, 2), size=5, mode="reflect")
    got = postprocess_map(torch.from_numpy(score), torch.from_numpy(mask))
    np.testing.assert_array_equal(got.numpy(), want)
    median_first = scipy_erosion(mask, 2) * ndimage.median_filter(score, size=5, mode="reflect")
    assert not np.array_equal(got.numpy(), median_first)  # the order matters on this input


def skimage_published_filter(binary: np.ndarray) -> np.ndarray:
    """The published rule: skimage 26-connected labels, remove if filled_area <= 7."""
    out = binary.copy()
    labels = sk_label(binary, connectivity=3)
    for prop in regionprops(labels):
        if prop.area_filled <= 7:
            out[labels == prop.label] = False
    return out


@pytest.mark.parametrize("density", [0.05, 0.15, 0.3])
def test_component_removal_matches_skimage(density):
    rng = np.random.default_rng(int(density * 100))
    binary = rng.random((10, 14, 12)) < density
    got = remove_small_components(torch.from_numpy(binary))
    np.testing.assert_array_equal(got.numpy(), skimage_published_filter(binary))


def test_component_removal_hand_cases():
    vol = np.zeros((6, 12, 12), dtype=bool)
    vol[0, 0, :7] = True  # 7 voxels: removed
    vol[3, 0, :8] = True  # 8 voxels: kept
    vol[0, 5:7, 5:7] = True  # 4 voxels ...
    vol[1, 7:9, 7:9] = True  # ... + 4 touching only at a corner: one 26-connected component of 8: kept
    vol[5, 10, 10] = True  # a single voxel: removed
    got = remove_small_components(torch.from_numpy(vol)).numpy()
    want = vol.copy()
    want[0, 0, :7] = False
    want[5, 10, 10] = False
    np.testing.assert_array_equal(got, want)
    assert not remove_small_components(torch.zeros(3, 3, 3, dtype=torch.bool)).any()


def test_physical_constants_equal_the_published_ones_at_2mm():
    def constants(rule, spacing):
        settings = PostprocessSettings.for_grid(rule, spacing)
        return settings.rule, settings.median_kernel, settings.max_component

    assert constants("physical", 2.0) == ("physical", 5, 7)
    assert constants("physical", 4.0) == ("physical", 3, 0)  # 10 mm, 56 mm³
    assert constants("physical", 1.0) == ("physical", 11, 56)
    assert constants("published", 4.0) == ("published", 5, 7)
    with pytest.raises(ValueError):
        PostprocessSettings.for_grid("metric", 2.0)
    assert PostprocessSettings.for_grid("published", 2.0, width=96).erosion_iterations == 3  # W // 25


def test_settings_round_trip_through_json_and_refuse_malformed_fields():
    settings = PostprocessSettings.for_grid("physical", 4.0, width=16)
    assert PostprocessSettings.from_json(json.loads(json.dumps(settings.to_json()))) == settings
    assert PostprocessSettings.from_json(None) == PostprocessSettings()  # published, erosion W // 25
    for bad, field in (({"median_filter": {"kernel": 4}}, "median_filter.kernel"),
                       ({"median_filter": {"kernel": True}}, "median_filter.kernel"),
                       ({"components": {"removed_if_voxels_at_most": -1}}, "components.removed_if_voxels_at_most"),
                       ({"erosion_iterations": 1.5}, "erosion_iterations"), ({"rule": "metric"}, "rule"),
                       ({"median_filter": []}, "median_filter"), ({"voxel_mm": 0}, "voxel_mm")):
        with pytest.raises(ValueError, match=field):
            PostprocessSettings.from_json(bad)
    with pytest.raises(ValueError, match="object"):
        PostprocessSettings.from_json([1])


def test_cpu_threads_sets_and_restores_the_torch_thread_count():
    before = torch.get_num_threads()
    with postprocess.cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
