"""Frequency patch-masking (paper Eq. 7) and its spectral masks.

Spectral masks are *keep* masks, as ``M_p^F`` in Eq. 7: float ``[B, 1, H, W]`` in {0, 1}, 1 = keep
the coefficient. They are defined on the **fftshifted** spectrum: the DC coefficient sits at row
``H // 2``, column ``W // 2`` (``torch.fft.fftshift`` convention, for even and odd sizes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mddpm.masking.patches import randint_inclusive, sample_patch_mask

SPECTRAL_MASKS = ("centre-square", "random-patches")


def fpm(x: Tensor, keep: Tensor) -> Tensor:
    """Frequency patch-masking, Eq. 7: ``z_F = Re(IDFT(M_F ⊙ DFT(z0)))``, per image and channel.

    x [B, C, H, W] real; keep [B, 1, H, W] (or broadcastable), in fftshifted layout. A mask that is
    not Hermitian-symmetric gives a complex image, of which the real part is kept, as the released
    code does. For real x that real part equals the inverse transform with the mask's Hermitian part
    ``(M(f) + M(−f)) / 2``, so it is computed with real FFTs (``rfft2``/``irfft2``, half the work).
    Float32 / complex64 arithmetic (the released code uses numpy complex128; the difference is about
    1e-7 of the image range). Output has x's dtype.
    """
    height, width = x.shape[-2:]
    k = torch.fft.ifftshift(keep.float(), dim=(-2, -1))
    k_mirrored = torch.roll(k.flip(-2, -1), shifts=(1, 1), dims=(-2, -1))  # k(-f): index (-i mod H, -j mod W)
    k_hermitian = 0.5 * (k + k_mirrored)
    spectrum = torch.fft.rfft2(x.float())
    return torch.fft.irfft2(spectrum * k_hermitian[..., : width // 2 + 1], s=(height, width)).to(x.dtype)


def centre_square_mask(half_width: Tensor, low_pass: Tensor, height: int, width: int) -> Tensor:
    """The released code's spectral mask: a centred square, kept (low-pass) or removed (high-pass).

    The square covers rows ``[H//2 − v, H//2 + v − 1]`` and columns ``[W//2 − v, W//2 + v − 1]``
    of the shifted spectrum (``v = half_width``, one int per sample, [B]); ``low_pass`` [B] bool.
    Returns keep [B, 1, H, W] float32.
    """
    device = half_width.device
    v = half_width[:, None]
    rows = torch.arange(height, device=device)[None]
    cols = torch.arange(width, device=device)[None]
    in_rows = (rows >= height // 2 - v) & (rows < height // 2 + v)  # [B, H]
    in_cols = (cols >= width // 2 - v) & (cols < width // 2 + v)  # [B, W]
    square = in_rows[:, :, None] & in_cols[:, None, :]
    keep = torch.where(low_pass[:, None, None], square, ~square)
    return keep[:, None].float()


def sample_spectral_mask(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    kind: str = "centre-square",
    half_width: tuple[int, int] = (2, 10),
    ratio: tuple[float, float] = (0.1, 0.9),
    cells: int = 8,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw one spectral keep mask per sample -> [B, 1, H, W] float32 in {0, 1}.

    - ``"centre-square"`` (default; the released code, also Fig. 2a; protocol §11.1): half-width
      v ~ U{half_width[0]..half_width[1]}, low-pass (keep only the square) or high-pass (remove it)
      with probability ½ each.
    - ``"random-patches"`` (paper text of Eq. 7, no reference code): rectangular patches placed at
      random in the whole shifted spectrum, covering a fraction ~ U(ratio) of it, are removed (the
      grid-cell sampler of :func:`mddpm.masking.patches.sample_patch_mask` with an all-ones
      foreground).
    """
    device = torch.device(device) if device is not None else generator.device
    if kind == "centre-square":
        low = torch.full((batch,), half_width[0], device=device, dtype=torch.long)
        high = torch.full((batch,), half_width[1], device=device, dtype=torch.long)
        v = randint_inclusive(low, high, generator)
        low_pass = torch.rand(batch, generator=generator, device=device) < 0.5
        return centre_square_mask(v, low_pass, height, width)
    if kind == "random-patches":
        everywhere = torch.ones(batch, 1, height, width, device=device)
        return (~sample_patch_mask(everywhere, generator, ratio, cells)).float()
    raise ValueError(f"unknown spectral mask {kind!r} (known: {', '.join(SPECTRAL_MASKS)})")
