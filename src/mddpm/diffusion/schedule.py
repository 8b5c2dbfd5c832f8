"""Cosine noise schedule, forward process and one-step x0 reconstruction (protocol.md §2.2).

Images enter in [0, 1] units and are mapped to the model range [-1, 1] (``2x - 1``); the network
predicts x0 directly (``pred_x0``), and its output is mapped back with ``(y + 1) / 2``. Nothing is
clipped, as in the published code.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def cosine_alphas_cumprod(timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """ᾱ_t of the cosine schedule (Nichol & Dhariwal 2021) -> float64 ``[timesteps]``.

    ``f(u) = cos²((u/T + s)/(1 + s) · π/2)`` on ``u = 0..T``; ``β_t = 1 − f(t+1)/f(t)`` clipped to
    ``[0, max_beta]``; ``ᾱ_t = Π_{i≤t} (1 − β_i)``. With the defaults ᾱ[499] = 0.4938.
    """
    u = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    f = torch.cos((u / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(0, max_beta)
    return torch.cumprod(1 - betas, dim=0)


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] image units -> [-1, 1] model range: ``2x - 1``."""
    return 2 * x - 1


def from_model_range(y: torch.Tensor) -> torch.Tensor:
    """[-1, 1] model range -> [0, 1] image units: ``(y + 1) / 2`` (not clipped)."""
    return (y + 1) / 2


class GaussianDiffusion(nn.Module):
    """The forward process ``x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·noise`` with a cosine schedule.

    Buffers (float32, ``[T]``, as the published wrapper stores them): ``alphas_cumprod``,
    ``sqrt_ac`` = √ᾱ, ``sqrt_1m_ac`` = √(1−ᾱ). They move with ``.to(device)``.
    """

    def __init__(self, timesteps: int = 1000, s: float = 0.008):
        super().__init__()
        self.timesteps = timesteps
        ac = cosine_alphas_cumprod(timesteps, s)
        self.register_buffer("alphas_cumprod", ac.float(), persistent=False)
        self.register_buffer("sqrt_ac", ac.sqrt().float(), persistent=False)
        self.register_buffer("sqrt_1m_ac", (1 - ac).sqrt().float(), persistent=False)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise ``x0 [B, C, H, W]`` (model range) to step ``t [B]`` (long) with ``noise`` (same shape
        or broadcastable) -> ``x_t`` with ``x0``'s shape, float32 unless x0 is wider."""
        shape = (-1,) + (1,) * (x0.ndim - 1)
        return self.sqrt_ac[t].view(shape) * x0 + self.sqrt_1m_ac[t].view(shape) * noise

    def sample_timesteps(self, batch: int, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
        """``[batch]`` long timesteps, uniform on {0, ..., T−1}, drawn from ``generator`` (on ``device``)."""
        return torch.randint(0, self.timesteps, (batch,), generator=generator, device=device)

    def fixed_timesteps(self, batch: int, t_fix: int, device: torch.device | str) -> torch.Tensor:
        """``[batch]`` long tensor filled with ``t_fix`` (the test-time step, 499 in the paper)."""
        if not 0 <= t_fix < self.timesteps:
            raise ValueError(f"t_fix={t_fix} outside [0, {self.timesteps - 1}]")
        return torch.full((batch,), t_fix, dtype=torch.long, device=device)
