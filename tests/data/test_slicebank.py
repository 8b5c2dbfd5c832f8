"""The slice bank: shapes, determinism, uniform sampling with replacement, device following."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from mddpm.data.cache import load_prepared
from mddpm.data.grids import GridSpec
from mddpm.data.prepare import prepare_dataset
from mddpm.data.slicebank import SliceBank
from mddpm.errors import MddpmError


def numbered_bank(n=4, z=5, h=6, w=7, device="cpu") -> SliceBank:
    """Slice (v, s) is filled with the value v * z + s, so a sample names its source slice."""
    ids = torch.arange(n * z, dtype=torch.float32).view(n, z, 1, 1).expand(n, z, h, w)
    masks = (torch.arange(n * z).view(n, z, 1, 1) % 2).expand(n, z, h, w).to(torch.uint8)
    return SliceBank(ids.to(device), masks.to(device))


def test_sample_shapes_and_content():
    bank = numbered_bank()
    assert len(bank) == 20 and bank.num_volumes == 4 and bank.slice_shape == (6, 7)
    batch = bank.sample(32, torch.Generator().manual_seed(0))
    assert batch["image"].shape == batch["mask"].shape == (32, 1, 6, 7)
    assert batch["image"].dtype == batch["mask"].dtype == torch.float32
    ids = batch["image"][:, 0, 0, 0]
    # each sample is one whole slice of the bank, with its own mask
    assert torch.equal(batch["image"], ids.view(32, 1, 1, 1).expand(32, 1, 6, 7))
    assert torch.equal(batch["mask"][:, 0, 0, 0], ids % 2)


def test_sample_volumes():
    bank = numbered_bank()
    batch = bank.sample_volumes(3, torch.Generator().manual_seed(0))
    assert batch["image"].shape == batch["mask"].shape == (3, 5, 6, 7)
    first = batch["image"][:, :, 0, 0]
    assert torch.equal(first - first[:, :1], torch.arange(5.0).expand(3, 5))  # slices in order
    assert torch.all(first[:, 0] % 5 == 0)
    assert batch["mask"].dtype == torch.float32


def test_sampling_is_deterministic_given_the_generator():
    bank = numbered_bank()
    a = bank.sample(64, torch.Generator().manual_seed(7))["image"]
    b = bank.sample(64, torch.Generator().manual_seed(7))["image"]
    c = bank.sample(64, torch.Generator().manual_seed(8))["image"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(7)
    first, second = bank.sample(64, g)["image"], bank.sample(64, g)["image"]
    assert torch.equal(first, a) and not torch.equal(second, a)  # the generator advances


def test_sampling_is_uniform_with_replacement():
    bank = numbered_bank(n=5, z=8, h=1, w=1)
    draws = 40 * 500
    ids = bank.sample(draws, torch.Generator().manual_seed(1))["image"].flatten().long()
    counts = torch.bincount(ids, minlength=40).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    vols = bank.sample_volumes(5 * 1000, torch.Generator().manual_seed(2))["image"][:, 0].flatten().long() // 8
    assert stats.chisquare(torch.bincount(vols, minlength=5).numpy()).pvalue > 1e-3


def test_from_prepared_keeps_order_and_duplicates(phantom_dataset):
    prep = load_prepared(prepare_dataset(phantom_dataset, GridSpec(crop_mm=(96, 96, 48), spacing_mm=8.0),
                                         workers=1, progress=False))
    ids = ["case002", "case000", "case002"]
    bank = SliceBank.from_prepared(prep, ids)
    assert bank.images.shape == (3, 6, 12, 12) and bank.device == torch.device("cpu")
    for i, cid in enumerate(ids):
        image, mask, _ = prep.volume(cid)
        assert torch.equal(bank.images[i], torch.from_numpy(np.array(image)))
        assert torch.equal(bank.masks[i], torch.from_numpy(np.array(mask)))
    assert len(bank) == 18
    with pytest.raises(MddpmError, match="no case"):
        SliceBank.from_prepared(prep, ["case000", "nope"])
    with pytest.raises(MddpmError, match="no cases"):
        SliceBank.from_prepared(prep, [])


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="one shape"):
        SliceBank(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="one shape"):
        SliceBank(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))


def test_follows_the_bank_device():
    bank = numbered_bank()
    batch = bank.sample(4, torch.Generator().manual_seed(0))
    assert batch["image"].device == bank.device
    if torch.cuda.is_available():
        with pytest.raises(RuntimeError):  # a generator on another device is an error, not a silent copy
            bank.sample(4, torch.Generator(device="cuda"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bank_samples_on_device_without_host_sync():
    bank = numbered_bank(device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.set_sync_debug_mode("error")
    try:
        batch = bank.sample(32, g)
        vols = bank.sample_volumes(2, g)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert batch["image"].is_cuda and batch["mask"].is_cuda and vols["image"].is_cuda
    assert torch.equal(batch["mask"][:, 0, 0, 0], batch["image"][:, 0, 0, 0] % 2)
