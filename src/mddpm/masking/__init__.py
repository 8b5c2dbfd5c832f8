"""Masking for mDDPM training: IPM, FPM and FPM-CM (paper Eqs. 6–8) and the released code's variant.

Pure batched tensor functions on the input's device with an explicit ``torch.Generator``.
Spatial patch masks are bool ``[B, 1, H, W]``, True = masked; spectral masks are keep masks
``[B, 1, H, W]`` in {0, 1} on the fftshifted spectrum.
"""

from mddpm.masking.block import MASKINGS, apply_masking
from mddpm.masking.patches import fpm_cm, ipm, patch_mask_for_fraction, sample_patch_mask
from mddpm.masking.released import released_augmentation, released_patch_mask
from mddpm.masking.spectral import SPECTRAL_MASKS, centre_square_mask, fpm, sample_spectral_mask

__all__ = [
    "MASKINGS",
    "SPECTRAL_MASKS",
    "apply_masking",
    "centre_square_mask",
    "fpm",
    "fpm_cm",
    "ipm",
    "patch_mask_for_fraction",
    "released_augmentation",
    "released_patch_mask",
    "sample_patch_mask",
    "sample_spectral_mask",
]
