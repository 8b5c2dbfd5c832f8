"""f-AnoGAN networks (Schlegl et al. 2019): a DCGAN-like generator, a WGAN-GP critic that also returns
its last feature map (the ``f(·)`` of the izi_f loss), and the latent encoder.

- :class:`Generator`: ``z [B, L]`` -> dense -> ``[C_top, r, r]`` -> ``n`` × (4×4 stride-2 transposed
  conv, layer norm, ReLU) -> 3×3 conv -> sigmoid, i.e. images in [0, 1] like the data. Layer norm
  instead of DCGAN's batch norm keeps G independent of the batch, so a frozen G behaves the same in
  the encoder stage and at test time (Baur et al.'s f-AnoGAN generator has no batch norm either).
- :class:`Critic`: ``n`` × (4×4 stride-2 conv, layer norm except on the first, LeakyReLU 0.2) ->
  dense -> one score per image; no batch norm, as the gradient penalty requires (Gulrajani et al.).
- :class:`LatentEncoder`: Baur's 5×5 stride-2 conv encoder (batch norm) -> dense -> tanh (Schlegl
  restricts encoder outputs to [-1, 1]); ``tanh=False`` gives an unbounded linear output.
"""

from __future__ import annotations

import torch
from torch import nn

from mddpm.nets.autoencoders import ConvEncoder


def _stage_channels(num_stages: int, base_channels: int, max_channels: int) -> list[int]:
    """Channels from full resolution downwards: base, 2·base, ... capped at max_channels."""
    return [min(max_channels, base_channels * 2**i) for i in range(num_stages)]


class Generator(nn.Module):
    """``z [B, latent_dim]`` -> images ``[B, 1, image_size, image_size]`` in [0, 1]."""

    def __init__(self, image_size: int, latent_dim: int = 128, num_up: int = 4, base_channels: int = 64,
                 max_channels: int = 512):
        super().__init__()
        if image_size % 2**num_up:
            raise ValueError(f"image_size {image_size} is not divisible by 2**num_up = {2**num_up}")
        chans = _stage_channels(num_up, base_channels, max_channels)[::-1]  # coarse -> fine
        self.res = image_size // 2**num_up
        self.top = chans[0]
        self.project = nn.Linear(latent_dim, self.top * self.res**2)
        layers: list[nn.Module] = [nn.GroupNorm(1, self.top), nn.ReLU()]
        prev = self.top
        for ch in chans[1:] + [chans[-1]]:
            layers += [nn.ConvTranspose2d(prev, ch, 4, stride=2, padding=1), nn.GroupNorm(1, ch), nn.ReLU()]
            prev = ch
        layers += [nn.Conv2d(prev, 1, 3, padding=1), nn.Sigmoid()]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(self.project(z).view(-1, self.top, self.res, self.res))


class Critic(nn.Module):
    """``x [B, 1, H, W]`` -> ``(score [B], features [B, C, H/2^n, W/2^n])``."""

    def __init__(self, image_size: int, num_down: int = 4, base_channels: int = 64, max_channels: int = 512):
        super().__init__()
        if image_size % 2**num_down:
            raise ValueError(f"image_size {image_size} is not divisible by 2**num_down = {2**num_down}")
        layers: list[nn.Module] = []
        prev = 1
        for i, ch in enumerate(_stage_channels(num_down, base_channels, max_channels)):
            layers += [nn.Conv2d(prev, ch, 4, stride=2, padding=1),
                       nn.GroupNorm(1, ch) if i > 0 else nn.Identity(), nn.LeakyReLU(0.2)]
            prev = ch
        self.features = nn.Sequential(*layers)
        res = image_size // 2**num_down
        self.score = nn.Linear(prev * res**2, 1)

    def forward(self, x: torch.Tensor):
        f = self.features(x)
        return self.score(f.flatten(1)).squeeze(1), f


class LatentEncoder(nn.Module):
    """``x [B, 1, H, W]`` -> ``z [B, latent_dim]`` (in [-1, 1] with ``tanh``)."""

    def __init__(self, image_size: int, latent_dim: int = 128, num_down: int = 4, base_channels: int = 32,
                 max_channels: int = 128, tanh: bool = True):
        super().__init__()
        if image_size % 2**num_down:
            raise ValueError(f"image_size {image_size} is not divisible by 2**num_down = {2**num_down}")
        self.conv = ConvEncoder(num_down, base_channels, max_channels, "batch")
        res = image_size // 2**num_down
        self.dense = nn.Linear(self.conv.out_channels * res**2, latent_dim)
        self.tanh = tanh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.dense(self.conv(x).flatten(1))
        return torch.tanh(z) if self.tanh else z
