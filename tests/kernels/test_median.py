"""The exact 3-D median (mddpm.kernels.median) against scipy.ndimage.median_filter: every path (fused compiled
network, torch network, gathered windows), threads, kernels, NaN, batches, and refused arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from mddpm.kernels import median
from mddpm.kernels.median import median_filter_3d


def blobs(rng, shape, p=0.5, sigma=1.5) -> np.ndarray:
    """Random smooth blobs covering about ``1 - p`` of the volume."""
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    return field > np.quantile(field, p)


@pytest.mark.parametrize("shape", [(7, 9, 8), (1, 6, 5), (2, 3, 11), (4, 1, 2), (13, 12, 15)])
@pytest.mark.parametrize("kind", ["masked", "dense", "signed", "ties"])
@pytest.mark.parametrize("use_torch", [False, True])  # the fused compiled network (CPU) and the torch one (any device)
@pytest.mark.parametrize("gather_below", [0.0, 1.0])  # the network always / gathered windows for non-negative maps
def test_median_matches_scipy(shape, kind, use_torch, gather_below, monkeypatch):
    monkeypatch.setattr(median, "GATHER_BELOW", gather_below)
    monkeypatch.setattr(median, "COUNT_BELOW", gather_below)
    rng = np.random.default_rng([*shape, len(kind)])
    x = rng.random(shape).astype(np.float32)
    if kind == "masked":  # non-negative with many zeros: cropped to the windows holding a non-zero
        x *= blobs(rng, shape, p=0.6, sigma=1.0)
    elif kind == "dense":  # non-zero over a whole blob, as real anomaly maps are inside the brain
        x = (x + 0.01) * blobs(rng, shape, p=0.2, sigma=1.0)
    elif kind == "signed":
        x -= 0.5
    else:
        x = np.round(x * 3).astype(np.float32)
    got = median_filter_3d(torch.from_numpy(x), 5, slab_elements=50, use_torch=use_torch)  # several slabs
    np.testing.assert_array_equal(got.numpy(), ndimage.median_filter(x, size=5, mode="reflect"))


@pytest.mark.parametrize("threads", [2, 3, 40])  # more threads than planes: at most one per plane
def test_median_split_between_threads_matches_scipy(threads):
    rng = np.random.default_rng(threads)
    x = ((rng.random((11, 14, 13)) + 0.01) * blobs(rng, (11, 14, 13), p=0.2, sigma=1.0)).astype(np.float32)
    got = median_filter_3d(torch.from_numpy(x), 5, threads=threads)
    np.testing.assert_array_equal(got.numpy(), ndimage.median_filter(x, size=5, mode="reflect"))


@pytest.mark.parametrize("k", [3, 7])
def test_median_other_kernels_match_scipy(k):
    rng = np.random.default_rng(k)
    x = (rng.random((9, 11, 10)) - 0.3).astype(np.float32)
    np.testing.assert_array_equal(median_filter_3d(torch.from_numpy(x), k).numpy(),
                                  ndimage.median_filter(x, size=k, mode="reflect"))
    assert torch.equal(median_filter_3d(torch.from_numpy(x), 1), torch.from_numpy(x))


@pytest.mark.parametrize("use_torch", [False, True])
def test_median_nan_counts_as_largest(use_torch):
    """NaN sorts after every number (as np.sort/np.partition): the median is NaN only where the
    window's median rank falls on a NaN; infinities stay ordinary values."""
    rng = np.random.default_rng(5)
    x = rng.random((6, 7, 8)).astype(np.float32)
    x[rng.random(x.shape) < 0.45] = np.nan
    x[0, 0, :3] = [np.inf, -np.inf, np.inf]
    padded = np.pad(x, 1, mode="symmetric")  # scipy's "reflect" for a 3³ window
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3, 3)).reshape(*x.shape, 27)
    want = np.sort(windows, axis=-1)[..., 13]
    got = median_filter_3d(torch.from_numpy(x), 3, use_torch=use_torch).numpy()
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got).any() and not np.isnan(got).all()


def test_median_batched_kernel3_and_all_zero():
    rng = np.random.default_rng(2)
    x = (rng.random((3, 5, 8, 7)) * blobs(rng, (3, 5, 8, 7), p=0.5)).astype(np.float32)
    x[1] = 0
    got = median_filter_3d(torch.from_numpy(x), 3).numpy()
    want = np.stack([ndimage.median_filter(v, size=3, mode="reflect") for v in x])
    np.testing.assert_array_equal(got, want)
    assert not got[1].any()


def test_median_rejects_even_kernel_and_bad_rank():
    with pytest.raises(ValueError, match="odd"):
        median_filter_3d(torch.zeros(4, 4, 4), 4)
    with pytest.raises(ValueError, match="odd"):
        median_filter_3d(torch.zeros(4, 4, 4), 0)
    with pytest.raises(ValueError, match="shape"):
        median_filter_3d(torch.zeros(4, 4), 5)
