"""``dae``: the denoising-autoencoder baseline of Table 1 (Kascenas, Pugeault, O'Neil 2022, "Denoising
autoencoders for unsupervised anomaly detection in brain MRI", MIDL, PMLR 172).

Settings from the paper and its published code (github.com/AntanasKascenas/DenoisingAE,
``src/denoising.py``, ``src/unet.py``):

- net: U-Net, depth 4, 64 base channels (``wf=6``), weight-standardised 3×3 convs with reflection
  padding, Swish, GroupNorm, average-pool down, 2×2 transposed-conv up (:class:`PlainUNet`);
- **coarse noise**: i.i.d. N(0, 0.2²) at **16×16** per channel, upsampled bilinearly
  (``align_corners=True``) to the slice size, circularly shifted by a random offset in both axes
  (one offset per batch), and added **only on the foreground** (``x > 0.01``);
- loss: squared error between the net's output on the noisy slice and the clean slice, on the
  foreground only, averaged over all pixels; test: ``x̂ = net(x)`` with no noise;
- optimiser: Adam lr 1e-4 with AMSGrad and weight decay 1e-5, cosine annealing with T_max = 100
  epochs of 32 steps (period 6,400 steps); batch 16; 2100 epochs × 32 = 67,200 steps.

Choices: single-channel T2 input (Kascenas used 4 modalities at 128²); the noise grid stays 16×16 on
the 96² grid (the paper's number; each coarse cell then spans 6 px instead of 8) and is 8×8 on the 48²
demo grid (same cell size as 16 on 96). The cosine schedule is applied per step
(``0.5·(1 + cos(π·step / cosine_steps))``, which the training loop reads from :meth:`lr_scale`)
instead of per 32-step epoch; ``cosine_steps=0`` turns it off. Adam options are given by
:meth:`optimizer_options`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mddpm.errors import MddpmError
from mddpm.methods.base import AnomalyMethod
from mddpm.nets.autoencoders import PlainUNet
from mddpm.registry import register_method

FOREGROUND_THRESHOLD = 0.01  # Kascenas: a pixel is foreground when its intensity (summed over channels) > 0.01


def coarse_noise(shape: tuple, res: int, std: float, generator: torch.Generator, device=None) -> torch.Tensor:
    """Low-resolution Gaussian noise upsampled to ``shape = (B, C, H, W)``.

    N(0, std²) on a ``res × res`` grid per sample and channel, bilinear upsampling with
    ``align_corners=True``, then one random circular shift (rows, columns) for the whole batch.
    Bilinear interpolation is not an ideal low-pass: measured, ~90 % of the field's energy lies within
    the coarse grid's Nyquist frequency (``res/2`` cycles per image), against ~4 % for white noise.
    """
    b, c, h, w = shape
    low = torch.randn((b, c, res, res), generator=generator, device=device) * std
    noise = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=True)
    shift = torch.randint(0, 2**31 - 1, (2,), generator=generator, device=device)
    rows = (torch.arange(h, device=device) - shift[0]) % h  # torch.roll without a host sync
    cols = (torch.arange(w, device=device) - shift[1]) % w
    return noise.index_select(2, rows).index_select(3, cols)


def foreground(x: torch.Tensor) -> torch.Tensor:
    """Kascenas' foreground mask of ``[B, C, H, W]``: channel sum > 0.01, ``[B, 1, H, W]`` float."""
    return (x.sum(1, keepdim=True) > FOREGROUND_THRESHOLD).to(x.dtype)


def corrupt(x: torch.Tensor, res: int, std: float, generator: torch.Generator) -> torch.Tensor:
    """The DAE's training input: ``x + coarse_noise`` on the foreground of ``x``, background unchanged."""
    return x + coarse_noise(x.shape, res, std, generator, x.device).to(x.dtype) * foreground(x)


class DAEMethod(AnomalyMethod):
    """Denoising U-Net: ``training_loss`` = foreground MSE of net(x + coarse noise) vs x; ``reconstruct`` = net(x)."""

    def __init__(self, depth: int = 4, base_channels: int = 64, noise_res: int = 16, noise_std: float = 0.2,
                 cosine_steps: int = 3200, amsgrad: bool = True, weight_decay: float = 1e-5):
        super().__init__()
        self.noise_res, self.noise_std, self.cosine_steps = noise_res, noise_std, cosine_steps
        self.amsgrad, self.weight_decay = amsgrad, weight_decay
        self.net = PlainUNet(1, 1, depth, base_channels)

    def _check(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        if h % self.net.multiple or w % self.net.multiple:
            raise MddpmError(f"dae: slices {h}x{w} are not divisible by {self.net.multiple} "
                             f"(2**(depth-1)); lower model.depth")

    def training_loss(self, batch: dict, generator: torch.Generator, step: int = 0) -> torch.Tensor:
        x = batch["image"]
        self._check(x)
        noisy = corrupt(x, self.noise_res, self.noise_std, generator)
        return ((self.net(noisy) - x).pow(2) * foreground(x)).mean()

    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self._check(image)
        return self.net(image)

    def optimizer_options(self) -> list[dict]:
        """Extra ``torch.optim.Adam`` keyword arguments per parameter group."""
        return [{"amsgrad": self.amsgrad, "weight_decay": self.weight_decay}]

    def lr_scale(self, step: int) -> float:
        """Learning-rate multiplier at ``step``: cosine annealing that, like PyTorch's ``CosineAnnealingLR``
        past ``T_max``, keeps following the cosine (down to 0 at ``cosine_steps``, back up at twice that)."""
        if self.cosine_steps <= 0:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * step / self.cosine_steps))


@register_method(
    "dae",
    "U-Net denoising autoencoder trained with coarse noise, 16x16 upsampled (Kascenas et al. 2022; 67,200 steps)",
    reference="Kascenas, Pugeault, O'Neil. Denoising autoencoders for unsupervised anomaly detection in brain MRI. "
              "MIDL 2022, PMLR 172",
)
def build(model_cfg: dict) -> DAEMethod:
    return DAEMethod(**model_cfg)
