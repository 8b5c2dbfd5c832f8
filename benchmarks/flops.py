"""Forward FLOPs of the U-Net from its layer shapes: the basis of the GPU check's achieved-TFLOP/s figure
and of the GPU-hour estimates in docs/benchmark.md (the library itself never counts FLOPs)."""

from __future__ import annotations

import math

import torch
from torch import nn

from mddpm.nets.unet import AttentionBlock, UNet


def unet_flops(unet: UNet, height: int, width: int) -> int:
    """Forward FLOPs per sample of ``unet`` on an ``height x width`` input (2 FLOP per multiply-add).

    Counts convolutions, linear layers and the two attention matmuls (QK^T and AV); norms,
    activations, pooling and additions are left out. Computed from layer shapes by tracing a copy
    of the net on the meta device (no real compute, no memory).
    """
    with torch.device("meta"):
        net = UNet(**unet.config).eval()
    flops = 0

    def conv_hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal flops
        kernel = math.prod(mod.kernel_size) * mod.in_channels // mod.groups
        flops += 2 * kernel * out[0].numel()  # out[0]: one sample

    def linear_hook(mod: nn.Linear, inp: tuple, out: torch.Tensor) -> None:
        nonlocal flops
        flops += 2 * mod.in_features * out[0].numel()

    def attention_hook(mod: AttentionBlock, inp: tuple, out: torch.Tensor) -> None:
        nonlocal flops
        _, c, hgt, wid = inp[0].shape
        flops += 2 * 2 * (hgt * wid) ** 2 * c  # QK^T and AV over all heads

    hooks = []
    for mod in net.modules():
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            hooks.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_hook(linear_hook))
        elif isinstance(mod, AttentionBlock):
            hooks.append(mod.register_forward_hook(attention_hook))
    with torch.no_grad():
        net(torch.zeros(1, unet.config["in_channels"], height, width, device="meta"),
            torch.zeros(1, dtype=torch.long, device="meta"))
    for h in hooks:
        h.remove()
    return int(flops)
