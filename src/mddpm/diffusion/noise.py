"""Noise for the forward process: Gaussian and 2-D OpenSimplex fractal ("simplex") noise.

The simplex noise follows the published pDDPM/mDDPM generator (protocol.md §2.3): Kurt Spencer's
2-D OpenSimplex (stretch (1/√3−1)/2, squash (√3−1)/2, 8 lattice gradients (±5,±2)/(±2,±5),
contribution ``(2 − dx² − dy²)⁴ · (g·d)``, divided by 47), summed over 6 octaves; octave ``i``
evaluates the lattice at ``(col, row) / (frequency / 2^i)`` with amplitude ``persistence^i``; the sum
is NOT normalised. It is written here as batched torch ops (any device, one gather per lattice
vertex, a loop over octaves only).

Difference from the published code: its permutation table is shuffled by OpenSimplex's 64-bit LCG
seeded from ``np.random``; here it is ``torch.randperm(256)`` drawn from the given generator, a
fresh one per field. Both are uniformly random permutations, so the fields have the same law but
not the same values for a given seed. Coordinates are evaluated in float32 (the published numba
code used float64; lattice coordinates here are below 100, so only points within ~1e-5 of a lattice
cell edge may land in the other cell).

Measured on this implementation (200 fields of 96x96, defaults, CPU, seed 0): per-field mean
−0.033 ± 0.180 (published −0.08 ± 0.16), per-field std 0.518 (range 0.417–0.615; published ≈ 0.53,
range 0.45–0.60), values in [−2.00, 1.87] (published about [−1.9, 2.0]).
"""

from __future__ import annotations

import math

import torch

STRETCH_2D = (1 / math.sqrt(3) - 1) / 2  # ≈ −0.2113: simplex -> square lattice
SQUISH_2D = (math.sqrt(3) - 1) / 2  # ≈ 0.3660: square lattice -> simplex
NORM_2D = 47.0
# 8 gradients as (gx, gy) pairs; a lattice vertex picks pair (perm[...] & 14) // 2.
GRADIENTS_2D = (5, 2, 2, 5, -5, 2, -2, 5, 5, -2, 2, -5, -5, -2, -2, -5)


def gaussian_noise(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` drawn from ``generator`` (which must live on ``device``)."""
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


def _vertex_contribution(perm: torch.Tensor, grads: torch.Tensor, xsv: torch.Tensor, ysv: torch.Tensor,
                         dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Kernel ``max(2 − dx² − dy², 0)⁴ · (g·d)`` of lattice vertex ``(xsv, ysv)`` (long ``[B, N]``)
    at offset ``(dx, dy)`` ``[B, N]``; ``perm [B, 256]`` long, ``grads [16]``."""
    attn = (2 - dx * dx - dy * dy).clamp(min=0)
    hashed = torch.gather(perm, 1, (torch.gather(perm, 1, xsv & 255) + ysv) & 255)
    index = hashed & 14
    return attn.square().square() * (grads[index] * dx + grads[index + 1] * dy)


def opensimplex_2d(x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """2-D OpenSimplex noise at points ``(x, y)`` ``[B, N]`` (float) with permutation tables
    ``perm [B, 256]`` (long, a permutation of 0..255 per row) -> ``[B, N]``, roughly in [−1, 1]."""
    grads = torch.tensor(GRADIENTS_2D, dtype=x.dtype, device=x.device)
    offset = (x + y) * STRETCH_2D
    xs, ys = x + offset, y + offset
    xsb, ysb = torch.floor(xs), torch.floor(ys)
    xins, yins = xs - xsb, ys - ysb
    in_sum = xins + yins
    squish = (xsb + ysb) * SQUISH_2D
    dx0, dy0 = x - (xsb + squish), y - (ysb + squish)
    xsb, ysb = xsb.long(), ysb.long()
    s1, s2 = SQUISH_2D, 2 * SQUISH_2D

    # The two vertices (1, 0) and (0, 1) of the rhombus always contribute.
    value = _vertex_contribution(perm, grads, xsb + 1, ysb, dx0 - 1 - s1, dy0 - s1)
    value = value + _vertex_contribution(perm, grads, xsb, ysb + 1, dx0 - s1, dy0 - 1 - s1)

    lower = in_sum <= 1  # inside the triangle at (0, 0), else the one at (1, 1)
    x_gt_y = xins > yins
    # Lower triangle: (0, 0) among the two closest vertices -> extra vertex (1, -1) or (-1, 1),
    # else the extra vertex is (1, 1).
    zins_lo = 1 - in_sum
    lo_near = (zins_lo > xins) | (zins_lo > yins)
    lo_ext_x = torch.where(lo_near, torch.where(x_gt_y, 1, -1), 1)
    lo_ext_y = torch.where(lo_near, torch.where(x_gt_y, -1, 1), 1)
    lo_dx = torch.where(lo_near, dx0 - lo_ext_x, dx0 - 1 - s2)
    lo_dy = torch.where(lo_near, dy0 - lo_ext_y, dy0 - 1 - s2)
    # Upper triangle: (1, 1) among the two closest -> extra vertex (2, 0) or (0, 2), else (0, 0).
    zins_hi = 2 - in_sum
    hi_near = (zins_hi < xins) | (zins_hi < yins)
    hi_ext_x = torch.where(hi_near, torch.where(x_gt_y, 2, 0), 0)
    hi_ext_y = torch.where(hi_near, torch.where(x_gt_y, 0, 2), 0)
    hi_dx = torch.where(hi_near, dx0 - hi_ext_x - s2, dx0)
    hi_dy = torch.where(hi_near, dy0 - hi_ext_y - s2, dy0)

    ext_x = xsb + torch.where(lower, lo_ext_x, hi_ext_x)
    ext_y = ysb + torch.where(lower, lo_ext_y, hi_ext_y)
    ext_dx = torch.where(lower, lo_dx, hi_dx)
    ext_dy = torch.where(lower, lo_dy, hi_dy)
    # The triangle's own base vertex: (0, 0) in the lower triangle, (1, 1) in the upper one.
    step = (~lower).long()
    base_dx = torch.where(lower, dx0, dx0 - 1 - s2)
    base_dy = torch.where(lower, dy0, dy0 - 1 - s2)
    value = value + _vertex_contribution(perm, grads, xsb + step, ysb + step, base_dx, base_dy)
    value = value + _vertex_contribution(perm, grads, ext_x, ext_y, ext_dx, ext_dy)
    return value / NORM_2D


def simplex_noise_2d(height: int, width: int, generator: torch.Generator, device: torch.device | str,
                     octaves: int = 6, persistence: float = 0.8, frequency: float = 64, batch: int = 1) -> torch.Tensor:
    """``batch`` independent fractal OpenSimplex fields -> float32 ``[batch, height, width]``.

    Pixel (row r, col c) of octave i is OpenSimplex at ``(c, r) / (frequency / 2^i)`` times
    ``persistence^i``; octaves are summed, not normalised (defaults: std ≈ 0.52 per 96x96 field).
    Each field has its own permutation table drawn from ``generator`` (which must live on
    ``device``); all octaves of one field share it, as in the published code.
    """
    perm = torch.argsort(torch.rand(batch, 256, generator=generator, device=device), dim=1)
    rows = torch.arange(height, device=device, dtype=torch.float32)
    cols = torch.arange(width, device=device, dtype=torch.float32)
    y = rows[:, None].expand(height, width).reshape(1, -1).expand(batch, -1)
    x = cols[None, :].expand(height, width).reshape(1, -1).expand(batch, -1)
    field = torch.zeros(batch, height * width, device=device, dtype=torch.float32)
    for i in range(octaves):
        scale = frequency / 2**i
        field = field + persistence**i * opensimplex_2d(x / scale, y / scale, perm)
    return field.reshape(batch, height, width)


def make_noise(kind: str, batch: int, height: int, width: int, generator: torch.Generator,
               device: torch.device | str, shared: bool = True, fp16_cast: bool = True) -> torch.Tensor:
    """Noise for a batch of slices -> float32 ``[batch, 1, height, width]``.

    ``kind``: ``"simplex"`` (see :func:`simplex_noise_2d`, defaults 6/0.8/64) or ``"gaussian"``.
    ``shared=True`` (faithful): ONE field repeated over the batch, as the published code shares
    one field across a training step's samples and across all slices/boxes of a test volume;
    ``shared=False``: an independent field per sample. ``fp16_cast`` (simplex only, default True as
    published): round the field to float16 precision (the published ``.half()``), returned as
    float32.
    """
    count = 1 if shared else batch
    if kind == "simplex":
        fields = simplex_noise_2d(height, width, generator, device, batch=count)
        if fp16_cast:
            fields = fields.half().float()
    elif kind == "gaussian":
        fields = gaussian_noise((count, height, width), generator, device)
    else:
        raise ValueError(f"unknown noise kind {kind!r} (expected 'simplex' or 'gaussian')")
    return fields[:, None].expand(batch, 1, height, width).contiguous()
