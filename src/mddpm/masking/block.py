"""The Masking Block of paper Fig. 1: one call that augments a training batch with a named variant."""

from __future__ import annotations

import torch
from torch import Tensor

from mddpm.masking.patches import fpm_cm, ipm, sample_patch_mask
from mddpm.masking.released import released_augmentation
from mddpm.masking.spectral import fpm, sample_spectral_mask

MASKINGS = ("none", "ipm", "fpm", "fpmcm", "released")


def apply_masking(
    x: Tensor,
    fg: Tensor,
    generator: torch.Generator,
    kind: str,
    ratio: tuple[float, float] = (0.1, 0.9),
    spectral: str = "centre-square",
    cells: int = 8,
) -> Tensor:
    """Augment clean slices x [B, 1, H, W] (brain mask fg, same shape) -> x_aug [B, 1, H, W].

    - ``"none"``: x unchanged.
    - ``"ipm"`` (Eq. 6): patches covering U(ratio) of the brain set to 0.
    - ``"fpm"`` (Eq. 7): the whole slice replaced by its spectrally masked version (``spectral``
      mask, see :func:`mddpm.masking.spectral.sample_spectral_mask`), multiplied by the brain mask
      so the background stays 0 (the paper masks only the foreground, Sec. 3.1; the released code
      also multiplies by the mask).
    - ``"fpmcm"`` (Eq. 8): the FPM image pasted into the clean slice inside patches covering
      U(ratio) of the brain.
    - ``"released"``: the released code's FPM-CM sampler (protocol §4.1), ``ratio``/``spectral``
      ignored.
    """
    if kind == "none":
        return x
    if kind == "released":
        return released_augmentation(x, fg, generator)
    batch, _, height, width = x.shape
    if kind == "ipm":
        return ipm(x, sample_patch_mask(fg, generator, ratio, cells))
    if kind not in ("fpm", "fpmcm"):
        raise ValueError(f"unknown masking {kind!r} (known: {', '.join(MASKINGS)})")
    keep = sample_spectral_mask(batch, height, width, generator, spectral, ratio=ratio, cells=cells, device=x.device)
    x_freq = fpm(x, keep)
    if kind == "fpm":
        return x_freq * (fg != 0).to(x.dtype)
    return fpm_cm(x, x_freq, sample_patch_mask(fg, generator, ratio, cells))
