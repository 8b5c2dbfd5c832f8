"""Training augmentation (``train.augment``, an option: the published code has none).

A batch ``{"image", "mask"}`` of slices ``[B, C, H, W]`` (C = 1, or S slices for volume-wise methods)
in [0, 1] with background 0 is changed per sample, in place of the drawn batch, on its own device:

- ``intensity``: gamma ``exp(U(-0.3, 0.3))``, contrast ``U(0.85, 1.15)``, a smooth multiplicative bias
  field (log-normal, std 0.1, from a 4 × 4 grid, bilinear), Gaussian noise of std ``U(0, 0.03)``;
  inside the brain only, clipped to [0, 1];
- ``spatial``: a left-right flip (p = 0.5) and a random affine (rotation ±10°, scale 0.9-1.1,
  translation ±5 % of the slice), bilinear for the image, nearest for the mask;
- ``all``: both (spatial first).

Draws come from ``generator`` only, so a run stays reproducible; ``none`` (the default) draws nothing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTS = ("none", "intensity", "spatial", "all")


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)


def _intensity(image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    b, c, h, w = image.shape
    dev = image.device
    gamma = torch.exp(_uniform(b, -0.3, 0.3, generator, dev)).view(b, 1, 1, 1)
    contrast = _uniform(b, 0.85, 1.15, generator, dev).view(b, 1, 1, 1)
    log_bias = 0.1 * torch.randn(b, 1, 4, 4, generator=generator, device=dev)
    bias = torch.exp(F.interpolate(log_bias, size=(h, w), mode="bilinear", align_corners=True))
    sigma = _uniform(b, 0.0, 0.03, generator, dev).view(b, 1, 1, 1)
    noise = sigma * torch.randn(image.shape, generator=generator, device=dev)
    out = image.clamp(min=0) ** gamma * contrast * bias + noise
    return (out.clamp(0, 1) * mask).to(image.dtype)


def _spatial(image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator):
    b = image.shape[0]
    dev = image.device
    angle = _uniform(b, -math.pi / 18, math.pi / 18, generator, dev)
    scale = _uniform(b, 0.9, 1.1, generator, dev)
    flip = torch.where(torch.rand(b, generator=generator, device=dev) < 0.5, -1.0, 1.0)
    shift = _uniform(2 * b, -0.1, 0.1, generator, dev).view(b, 2)  # normalised coordinates span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)  # [B, 2, 3]
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    image = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = F.grid_sample(mask.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return image * mask, mask


def augment_batch(batch: dict, mode: str, generator: torch.Generator) -> dict:
    """The batch augmented by ``mode`` (one of :data:`AUGMENTS`); the input dict is not changed."""
    if mode not in AUGMENTS:
        raise ValueError(f"unknown augmentation {mode!r} (known: {', '.join(AUGMENTS)})")
    if mode == "none":
        return batch
    image, mask = batch["image"], batch["mask"]
    if mode in ("spatial", "all"):
        image, mask = _spatial(image, mask, generator)
    if mode in ("intensity", "all"):
        image = _intensity(image, mask, generator)
    return {**batch, "image": image, "mask": mask}
