"""The augmentation of the released mDDPM code (protocol §4.1), vectorised over the batch.

Per sample, the released training step (a Python loop there, one sample at a time):

1. F = real part of the inverse FFT of the slice's shifted spectrum with a centred square of
   half-width v ~ U{2..10} kept (low-pass) or removed (high-pass), probability ½ each
   (:func:`mddpm.masking.spectral.sample_spectral_mask`, ``"centre-square"``).
2. R = number of rows (H axis) containing brain; ``max_len = floor((R / 10) · 1.8)``,
   ``min_len = floor(max_len / 2)``.
3. n ~ U{0..5} patches, each with height and width ~ U{min_len..max_len}, top row
   ~ U{first_row .. last_row − 10 − max_len} + 5 and left column ~ U{first_col .. last_col − 10 −
   max_len} + 5 (first/last = the brain's extent; all bounds inclusive, Python ``random.randint``).
4. F is pasted into the slice at the patch positions, and the slice is multiplied by the brain mask
   (here binarised, ``mask > 0``; only when n ≥ 1, as in the released loop).

The random numbers come from a ``torch.Generator`` instead of Python's ``random``: same
distributions, not the same draws. Where the released code would crash (no brain in the slice, or a
brain so small that a placement range is empty, R ≲ 13 rows), the sample is left unchanged (n = 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mddpm.masking.patches import foreground_extent, fpm_cm, randint_inclusive
from mddpm.masking.spectral import fpm, sample_spectral_mask

MAX_PATCHES = 5  # n ~ U{0..5}
OFFSET = 5  # added to the drawn top-left corner
SHRINK = 10  # subtracted (with max_len) from the last brain row/column to bound the corner


def released_patch_mask(fg: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The released code's paste region (steps 2–3 above).

    fg [B, 1, H, W] (nonzero = brain) -> (M [B, 1, H, W] bool = union of the patches, not yet
    restricted to the brain; applied [B] bool = at least one patch was placed).
    """
    batch, _, height, width = fg.shape
    device = fg.device
    first_row, last_row, first_col, last_col, has_fg = foreground_extent(fg)
    brain_rows = (fg[:, 0] != 0).any(-1).sum(-1)  # R [B]
    max_len = ((brain_rows.double() / 10) * 1.8).floor().long()
    min_len = max_len // 2
    top_high = last_row - SHRINK - max_len
    left_high = last_col - SHRINK - max_len
    placeable = has_fg & (top_high >= first_row) & (left_high >= first_col)

    zeros = torch.zeros(batch, dtype=torch.long, device=device)
    n = randint_inclusive(zeros, zeros + MAX_PATCHES, generator)
    n = torch.where(placeable, n, 0)
    shape = (batch, MAX_PATCHES)

    def per_patch(low: Tensor, high: Tensor) -> Tensor:
        return randint_inclusive(low[:, None].expand(shape), high[:, None].expand(shape), generator)

    row_len = per_patch(min_len, max_len)
    col_len = per_patch(min_len, max_len)
    top = per_patch(first_row, top_high) + OFFSET
    left = per_patch(first_col, left_high) + OFFSET
    active = torch.arange(MAX_PATCHES, device=device)[None] < n[:, None]  # [B, P]

    rows = torch.arange(height, device=device)[None, None]
    cols = torch.arange(width, device=device)[None, None]
    in_rows = (rows >= top[..., None]) & (rows < (top + row_len)[..., None]) & active[..., None]  # [B, P, H]
    in_cols = (cols >= left[..., None]) & (cols < (left + col_len)[..., None])  # [B, P, W]
    # union over patches of the outer products rows x cols, as one batched matmul of 0/1 matrices
    mask = torch.bmm(in_rows.transpose(1, 2).float(), in_cols.float()) > 0  # [B, H, W]
    return mask[:, None], n > 0


def released_augmentation(x: Tensor, fg: Tensor, generator: torch.Generator) -> Tensor:
    """The released mDDPM augmentation (FPM-CM with the code's sampler), see the module docstring.

    x [B, 1, H, W] in [0, 1]; fg [B, 1, H, W] brain mask -> x_aug [B, 1, H, W].
    """
    batch, _, height, width = x.shape
    keep = sample_spectral_mask(batch, height, width, generator, "centre-square", device=x.device)
    mask, applied = released_patch_mask(fg, generator)
    pasted = fpm_cm(x, fpm(x, keep), mask) * (fg != 0).to(x.dtype)
    return torch.where(applied[:, None, None, None], pasted, x)
