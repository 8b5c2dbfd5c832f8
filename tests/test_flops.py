"""benchmarks/flops.py: the U-Net's FLOPs from its layer shapes, against torch's own counter."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from flops import unet_flops  # benchmarks/ is on pytest's pythonpath (pyproject.toml)
from mddpm.nets import UNet

DEMO = dict(model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, groups=8)
TINY = dict(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, groups=4, head_channels=16)


@pytest.mark.parametrize("kwargs", [DEMO, dict(TINY, scale_shift_norm=False, resblock_updown=False, head_channels=8)])
def test_unet_flops_matches_torch_flop_counter(kwargs):
    net = UNet(**kwargs).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.rand(1, 1, 32, 32), torch.tensor([5]))
    assert unet_flops(net, 32, 32) == counter.get_total_flops()


def test_unet_flops_of_the_paper_preset():
    with torch.device("meta"):
        paper = UNet()
    flops = unet_flops(paper, 96, 96)
    assert 140e9 < flops < 160e9  # protocol.md §2.1: ≈ 75 GMAC ≈ 150 GFLOP per 96x96 forward
    assert unet_flops(paper, 48, 48) < flops / 3  # cost scales with the area (attention faster)
