"""Noise for the forward process: Gaussian and 2-D OpenSimplex fractal ("simplex") noise.

The simplex noise follows the published pDDPM/mDDPM generator (protocol.md §2.3): Kurt Spencer's
2-D OpenSimplex (stretch (1/√3−1)/2, squash (√3−1)/2, 8 lattice gradients (±5,±2)/(±2,±5), vertex
hash ``perm[(perm[x & 255] + y) & 255] & 14``, contribution ``(2 − dx² − dy²)⁴ · (g·d)``, divided
by 47), summed over 6 octaves; octave ``i`` evaluates the lattice at ``(col, row) / (frequency /
2^i)`` with amplitude ``persistence^i``; the sum is NOT normalised. It is written here as batched
torch ops on any device: the lattice geometry (vertices and kernel weights, which do not depend on
the permutation) is computed once in float64 and cached, so a field costs gathers and a weighted
sum (faster than the published numba generator per field, more so in batches: docs/speed.md). The
point-wise kernel reproduces the reference OpenSimplex to float64 precision (``noise2(10, 10)`` with
the seed-1234 table = 0.580279369186297, as published for lmas/opensimplex).

Difference from the published code: its permutation table is shuffled by OpenSimplex's 64-bit LCG
seeded from ``np.random.randint(−1e10, 1e10)`` on every call; here each field gets a uniform random
permutation drawn from the given ``torch.Generator`` (:func:`random_permutations`). Given the
published table, :func:`fractal_noise_2d` reproduces the published field to float32 rounding (its
``rand_2d_octaves`` fills ``[row, col]`` with ``noise2(col / f, row / f)``, as here); with a fresh
table per field, the fields have the same law but not the same values. (Checked: 400 fields with
LCG tables vs 400 with uniform ones: per-field mean 0.020 ± 0.207 vs 0.017 ± 0.216, per-field std
0.542 vs 0.542.)

Measured here (200 fields of 96x96, defaults, seed 0) next to protocol.md §2.3: per-field std
0.532 on average, 5–95 % range 0.446–0.616, extremes 0.388–0.711 (published ≈ 0.53, range
0.45–0.60); per-field mean −0.010 ± 0.205 (published −0.08 ± 0.16; the expectation is exactly 0
because the gradient set is symmetric and every table entry is uniform, so the published −0.08 is
within sampling error of a few fields); values in [−2.25, 2.25], per-field extremes ±1.62 at the
median (published roughly [−1.9, 2.0]); neighbouring pixels correlate at 0.955.
"""

from __future__ import annotations

import functools
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


def _lattice_terms(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 4 lattice vertices that contribute to 2-D OpenSimplex at points ``(x, y)`` ``[...]``.

    Returns ``xsv, ysv`` (long) and ``wx, wy`` (x's dtype), each ``[4, ...]``: vertex ``k``
    contributes ``(g_x·wx + g_y·wy) / 47`` where ``g`` is its gradient and
    ``w = max(2 − dx² − dy², 0)⁴ · (dx, dy)`` with ``(dx, dy)`` the offset from the vertex.
    Vertices: (1, 0), (0, 1), the triangle's base ((0, 0) or (1, 1)), and the extra vertex.
    """
    offset = (x + y) * STRETCH_2D
    xs, ys = x + offset, y + offset
    xsb, ysb = torch.floor(xs), torch.floor(ys)
    xins, yins = xs - xsb, ys - ysb
    in_sum = xins + yins
    squish = (xsb + ysb) * SQUISH_2D
    dx0, dy0 = x - (xsb + squish), y - (ysb + squish)
    xsb, ysb = xsb.long(), ysb.long()
    s1, s2 = SQUISH_2D, 2 * SQUISH_2D
    one = torch.ones_like(xsb)

    lower = in_sum <= 1  # inside the triangle at (0, 0), else the one at (1, 1)
    x_gt_y = xins > yins
    # Lower triangle: (0, 0) among the two closest vertices -> extra vertex (1, -1) or (-1, 1),
    # else the extra vertex is (1, 1).
    zins_lo = 1 - in_sum
    lo_near = (zins_lo > xins) | (zins_lo > yins)
    lo_ext_x = torch.where(lo_near, torch.where(x_gt_y, one, -one), one)
    lo_ext_y = torch.where(lo_near, torch.where(x_gt_y, -one, one), one)
    lo_dx = torch.where(lo_near, dx0 - lo_ext_x, dx0 - 1 - s2)
    lo_dy = torch.where(lo_near, dy0 - lo_ext_y, dy0 - 1 - s2)
    # Upper triangle: (1, 1) among the two closest -> extra vertex (2, 0) or (0, 2), else (0, 0).
    zins_hi = 2 - in_sum
    hi_near = (zins_hi < xins) | (zins_hi < yins)
    hi_ext_x = torch.where(hi_near & x_gt_y, 2 * one, 0 * one)
    hi_ext_y = torch.where(hi_near & ~x_gt_y, 2 * one, 0 * one)
    hi_dx = torch.where(hi_near, dx0 - hi_ext_x - s2, dx0)
    hi_dy = torch.where(hi_near, dy0 - hi_ext_y - s2, dy0)
    # The triangle's own base vertex: (0, 0) in the lower triangle, (1, 1) in the upper one.
    base = (~lower).long()

    xsv = torch.stack([xsb + 1, xsb, xsb + base, xsb + torch.where(lower, lo_ext_x, hi_ext_x)])
    ysv = torch.stack([ysb, ysb + 1, ysb + base, ysb + torch.where(lower, lo_ext_y, hi_ext_y)])
    dx = torch.stack([dx0 - 1 - s1, dx0 - s1, torch.where(lower, dx0, dx0 - 1 - s2), torch.where(lower, lo_dx, hi_dx)])
    dy = torch.stack([dy0 - s1, dy0 - 1 - s1, torch.where(lower, dy0, dy0 - 1 - s2), torch.where(lower, lo_dy, hi_dy)])
    kernel = (2 - dx * dx - dy * dy).clamp(min=0).square().square()
    return xsv, ysv, kernel * dx, kernel * dy


def _gradients(perm: torch.Tensor, xsv: torch.Tensor, ysv: torch.Tensor,
               dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient ``(g_x, g_y)`` of lattice vertices ``(xsv, ysv)`` ``[K]`` (long) under permutation
    tables ``perm [B, 256]`` (long) -> two ``[B, K]`` tensors: pair ``perm[(perm[x & 255] + y) & 255] & 14``
    of :data:`GRADIENTS_2D`."""
    grads = torch.tensor(GRADIENTS_2D, dtype=dtype, device=perm.device)
    first = torch.gather(perm, 1, (xsv & 255).expand(perm.shape[0], -1))
    index = torch.gather(perm, 1, (first + ysv) & 255) & 14
    return grads[index], grads[index + 1]


def opensimplex_2d(x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """2-D OpenSimplex noise at points ``(x, y)`` ``[N]`` (float) for each permutation table in
    ``perm [B, 256]`` (long, each row a permutation of 0..255) -> ``[B, N]`` in x's dtype, within ±1."""
    xsv, ysv, wx, wy = _lattice_terms(x, y)
    gx, gy = _gradients(perm, xsv.reshape(-1), ysv.reshape(-1), x.dtype)
    value = gx * wx.reshape(-1) + gy * wy.reshape(-1)
    return value.reshape(perm.shape[0], 4, -1).sum(1) / NORM_2D


@functools.lru_cache(maxsize=16)
def _fractal_terms(height: int, width: int, octaves: int, persistence: float, frequency: float,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The lattice geometry of a fractal field, which does not depend on the permutation.

    Returns the distinct lattice vertices ``vx, vy [U]`` (long, reduced mod 256, which is all the
    hash sees) and, for each of the ``octaves * 4`` terms of every pixel, its vertex
    ``slot [octaves * 4, height * width]`` (index into U) and weights ``wx, wy`` of the same shape
    (amplitude and 1/47 folded in). Computed once in float64 on the CPU, then stored on
    ``device`` (weights as float32).
    """
    rows = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width).reshape(-1)
    cols = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width).reshape(-1)
    keys, wxs, wys = [], [], []
    for i in range(octaves):
        scale = frequency / 2**i
        xsv, ysv, wx, wy = _lattice_terms(cols / scale, rows / scale)
        amplitude = persistence**i / NORM_2D
        keys.append((xsv & 255) * 256 + (ysv & 255))
        wxs.append(wx * amplitude)
        wys.append(wy * amplitude)
    vertices, slot = torch.unique(torch.cat(keys), return_inverse=True)
    return (vertices // 256).to(device), (vertices % 256).to(device), slot.to(device), \
        torch.cat(wxs).float().to(device), torch.cat(wys).float().to(device)


def fractal_noise_2d(perm: torch.Tensor, height: int, width: int, octaves: int = 6, persistence: float = 0.8,
                     frequency: float = 64) -> torch.Tensor:
    """Fractal OpenSimplex fields for permutation tables ``perm [B, 256]`` (long, on the work's
    device) -> float32 ``[B, height, width]``.

    Pixel (row r, col c) = Σ_i persistence^i · OpenSimplex((c, r) / (frequency / 2^i)), i < octaves,
    not normalised; all octaves share the field's table. The lattice geometry is cached per (size,
    octave settings, device), so a field costs one gradient lookup per distinct lattice vertex
    plus ``octaves * 4`` row gathers and multiply-adds over a ``[pixels, B]`` accumulator (this
    layout keeps each gather a contiguous copy of B values).
    """
    vx, vy, slot, wx, wy = _fractal_terms(height, width, octaves, float(persistence), float(frequency), perm.device)
    gx, gy = (g.t().contiguous() for g in _gradients(perm, vx, vy, torch.float32))  # [U, B]
    field = torch.zeros(height * width, perm.shape[0], device=perm.device)
    for term in range(slot.shape[0]):
        field.addcmul_(gx.index_select(0, slot[term]), wx[term, :, None])
        field.addcmul_(gy.index_select(0, slot[term]), wy[term, :, None])
    return field.t().reshape(-1, height, width)


def random_permutations(batch: int, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """``batch`` independent uniform permutations of 0..255 -> long ``[batch, 256]`` (argsort of
    uniform draws from ``generator``, which must live on ``device``)."""
    return torch.argsort(torch.rand(batch, 256, generator=generator, device=device), dim=1)


def simplex_noise_2d(height: int, width: int, generator: torch.Generator, device: torch.device | str,
                     octaves: int = 6, persistence: float = 0.8, frequency: float = 64, batch: int = 1) -> torch.Tensor:
    """``batch`` independent fractal OpenSimplex fields -> float32 ``[batch, height, width]``.

    The published generator's settings by default (6 octaves, persistence 0.8, first lattice
    scale 64 px); unnormalised, std ≈ 0.53 per 96x96 field. Each field gets a fresh permutation
    table drawn from ``generator`` (on ``device``); see :func:`fractal_noise_2d`.
    """
    perm = random_permutations(batch, generator, device)
    return fractal_noise_2d(perm, height, width, octaves, persistence, frequency)


def make_noise(kind: str, batch: int, height: int, width: int, generator: torch.Generator,
               device: torch.device | str, shared: bool = True, fp16_cast: bool = True,
               frequency: float = 64) -> torch.Tensor:
    """Noise for a batch of slices -> float32 ``[batch, 1, height, width]``.

    ``kind``: ``"simplex"`` (see :func:`simplex_noise_2d`: 6 octaves, persistence 0.8, first lattice
    scale ``frequency`` px, published 64 on 96-px slices) or ``"gaussian"``.
    ``shared=True`` (faithful): ONE field repeated over the batch, as the published code shares
    one field across a training step's samples and across all slices/boxes of a test volume;
    ``shared=False``: an independent field per sample. ``fp16_cast`` (simplex only, default True as
    published): round the field to float16 precision (the published ``.half()``), returned as
    float32.
    """
    count = 1 if shared else batch
    if kind == "simplex":
        fields = simplex_noise_2d(height, width, generator, device, frequency=frequency, batch=count)
        if fp16_cast:
            fields = fields.half().float()
    elif kind == "gaussian":
        fields = gaussian_noise((count, height, width), generator, device)
    else:
        raise ValueError(f"unknown noise kind {kind!r} (expected 'simplex' or 'gaussian')")
    return fields[:, None].expand(batch, 1, height, width).contiguous()
