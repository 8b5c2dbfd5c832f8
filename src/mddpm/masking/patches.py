"""Pixel-space patch masks and the pixel-space masking equations (paper Eqs. 6 and 8).

Convention: a *patch mask* ``M`` is a bool tensor ``[B, 1, H, W]``, True inside a patch (masked).
The paper's ``M_p^I`` is its complement (zero inside the patches), so ``z0 ⊙ M_p^I`` (Eq. 6) is
``ipm(z0, M)`` here. All functions are batched tensor code on the input's device; randomness comes
only from the ``torch.Generator`` passed in (it must live on that device).
"""

from __future__ import annotations

import torch
from torch import Tensor


def randint_inclusive(low: Tensor, high: Tensor, generator: torch.Generator) -> Tensor:
    """Uniform integers in ``[low, high]`` (both inclusive, elementwise; int64 tensors of one shape).

    Where ``high < low`` the result is ``low`` (callers mask those entries out).
    """
    span = (high - low + 1).clamp(min=1)
    u = torch.rand(low.shape, generator=generator, device=low.device, dtype=torch.float64)
    return low + torch.minimum((u * span).floor().long(), span - 1)


def foreground_extent(fg: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Inclusive bounding box of the foreground of each sample.

    ``fg`` [B, 1, H, W] (nonzero = foreground) -> ``(first_row, last_row, first_col, last_col)``,
    each int64 [B], and ``has_fg`` bool [B]. Rows index H, columns W. Samples without foreground
    get first = 0, last = -1.
    """
    fgb = fg[:, 0] != 0
    rows = fgb.any(-1)  # [B, H]
    cols = fgb.any(-2)  # [B, W]
    has_fg = rows.any(-1)
    rows, cols = rows.to(torch.uint8), cols.to(torch.uint8)  # argmax needs a numeric type
    height, width = rows.shape[-1], cols.shape[-1]
    first_row = torch.where(has_fg, rows.argmax(-1), 0)
    last_row = torch.where(has_fg, height - 1 - rows.flip(-1).argmax(-1), -1)
    first_col = torch.where(has_fg, cols.argmax(-1), 0)
    last_col = torch.where(has_fg, width - 1 - cols.flip(-1).argmax(-1), -1)
    return first_row, last_row, first_col, last_col, has_fg


def _cell_index(first: Tensor, last: Tensor, length: int, cells: int) -> tuple[Tensor, Tensor]:
    """Split ``[first, last]`` of each sample into ``cells`` near-equal runs.

    Returns the run index of every position ``[B, length]`` (int64) and whether the position lies
    inside ``[first, last]`` ``[B, length]`` (bool).
    """
    pos = torch.arange(length, device=first.device)
    extent = (last - first + 1).clamp(min=0)
    inner_edges = first[:, None] + (torch.arange(1, cells, device=first.device) * extent[:, None]) // cells
    index = (pos[None, :, None] >= inner_edges[:, None, :]).sum(-1)
    inside = (pos[None, :] >= first[:, None]) & (pos[None, :] <= last[:, None])
    return index, inside


def patch_mask_for_fraction(fg: Tensor, fraction: Tensor, generator: torch.Generator, cells: int = 8) -> Tensor:
    """Rectangular patches inside the foreground covering ``fraction`` of it (as closely as the grid allows).

    The foreground's bounding box is cut into a ``cells`` × ``cells`` grid of near-equal rectangles
    (the patches). Per sample the cells are switched on in random order (cells without foreground
    last) and the number switched on is the one whose covered foreground fraction is nearest to the
    target, so the achieved fraction is within half of the largest cell's share of the foreground
    of the target (about 1 % for a brain-shaped foreground at ``cells=8``). Masked pixels are
    restricted to the foreground (``M & fg``).

    fg [B, 1, H, W] (nonzero = foreground); fraction [B] in [0, 1] -> M [B, 1, H, W] bool.
    """
    batch, _, height, width = fg.shape
    fgb = fg[:, 0] != 0
    first_row, last_row, first_col, last_col, _ = foreground_extent(fg)
    row_cell, row_in = _cell_index(first_row, last_row, height, cells)
    col_cell, col_in = _cell_index(first_col, last_col, width, cells)
    n_cells = cells * cells
    cell = row_cell[:, :, None] * cells + col_cell[:, None, :]  # [B, H, W]
    counted = row_in[:, :, None] & col_in[:, None, :] & fgb
    counts = torch.zeros(batch, n_cells + 1, device=fg.device)
    counts.scatter_add_(1, torch.where(counted, cell, n_cells).flatten(1), counted.flatten(1).float())
    counts = counts[:, :n_cells]

    keys = torch.rand(batch, n_cells, generator=generator, device=fg.device)
    keys = torch.where(counts > 0, keys, 2.0)
    order = keys.argsort(-1)
    covered = counts.gather(1, order).cumsum(-1) / counts.sum(-1, keepdim=True).clamp(min=1)
    covered = torch.cat([torch.zeros_like(covered[:, :1]), covered], 1)  # [B, n_cells + 1]: k cells on
    n_on = (covered - fraction.to(covered)[:, None]).abs().argmin(-1)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n_cells, device=fg.device).expand(batch, -1))
    on = rank < n_on[:, None]  # [B, n_cells]
    masked = on.gather(1, cell.flatten(1)).view(batch, height, width) & counted
    return masked[:, None]


def sample_patch_mask(
    fg: Tensor, generator: torch.Generator, ratio: tuple[float, float] = (0.1, 0.9), cells: int = 8
) -> Tensor:
    """Paper masking (Sec. 3.1): patches covering a fraction of the foreground drawn uniformly in ``ratio``.

    fg [B, 1, H, W] -> M [B, 1, H, W] bool, True = masked, only inside the foreground. One target
    fraction per sample ~ U(ratio); the patches are grid cells of the foreground's bounding box
    switched on in random order (see :func:`patch_mask_for_fraction`, like MAE/SimMIM random patch
    masking restricted to the brain).
    """
    low, high = ratio
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"mask ratio must satisfy 0 <= low <= high <= 1, got {ratio}")
    fraction = low + (high - low) * torch.rand(fg.shape[0], generator=generator, device=fg.device)
    return patch_mask_for_fraction(fg, fraction, generator, cells)


def ipm(x: Tensor, mask: Tensor) -> Tensor:
    """Image patch-masking, Eq. 6: ``z_I = z0 ⊙ M_p^I`` = x with the masked pixels set to 0.

    x [B, C, H, W]; mask bool, broadcastable to x, True = masked.
    """
    return x.masked_fill(mask, 0.0)


def fpm_cm(x: Tensor, x_freq: Tensor, mask: Tensor) -> Tensor:
    """Frequency patch-masking CutMix, Eq. 8: ``z_FC = z_I + z_F ⊙ ¬M_p^I``.

    The clean x outside the patches, the FPM image ``x_freq`` inside them (same positions).
    x, x_freq [B, C, H, W]; mask bool, True = inside a patch.
    """
    return torch.where(mask, x_freq, x)
