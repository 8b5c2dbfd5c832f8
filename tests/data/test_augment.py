"""Training augmentation (train.augment): reproducible, brain-only, and off by default."""

from __future__ import annotations

import pytest
import torch

from mddpm.config import resolve_config, resolve_run_config
from mddpm.data.augment import AUGMENTS, augment_batch
from mddpm.errors import MddpmError


def _batch():
    mask = torch.zeros(4, 1, 32, 32)
    mask[:, :, 8:24, 6:26] = 1
    image = torch.linspace(0.1, 0.9, 32).view(1, 1, 1, 32).expand(4, 1, 32, 32) * mask
    return {"image": image.clone(), "mask": mask}


@pytest.mark.parametrize("mode", AUGMENTS[1:])
def test_augmentation_is_seeded_in_range_and_keeps_the_background(mode):
    batch = _batch()
    a = augment_batch(batch, mode, torch.Generator().manual_seed(1))
    b = augment_batch(batch, mode, torch.Generator().manual_seed(1))
    c = augment_batch(batch, mode, torch.Generator().manual_seed(2))
    torch.testing.assert_close(a["image"], b["image"])
    assert not torch.allclose(a["image"], c["image"])
    assert a["image"].shape == batch["image"].shape and a["mask"].shape == batch["mask"].shape
    assert a["image"].min() >= 0 and a["image"].max() <= 1
    assert (a["image"][a["mask"] == 0] == 0).all()
    assert not torch.allclose(a["image"][0], a["image"][1])  # per sample, not one draw for the batch
    if mode == "intensity":
        torch.testing.assert_close(a["mask"], batch["mask"])
    torch.testing.assert_close(batch["image"], _batch()["image"])  # the input is not changed


def test_none_draws_nothing_and_the_setting_is_checked():
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    batch = _batch()
    assert augment_batch(batch, "none", g) is batch
    assert torch.equal(g.get_state(), state)
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment_batch(batch, "flip", g)
    assert resolve_config("mddpm-fpmcm", "demo", [])["train"]["augment"] == "none"
    assert resolve_config("mddpm-fpmcm", "demo", ["train.augment=all"])["train"]["augment"] == "all"
    with pytest.raises(MddpmError, match="train.augment='flip'"):
        resolve_run_config("mddpm-fpmcm", "demo", overrides=["train.augment=flip"])
