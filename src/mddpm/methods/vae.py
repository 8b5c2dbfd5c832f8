"""``vae``: the 2-D slice VAE baseline of Table 1 (Baur et al. 2021, "Autoencoders for unsupervised
anomaly segmentation in brain MR images: a comparative study", MedIA 69:101952).

Follows the study's dense VAE as published with it (github.com/StefanDenn3r/
Unsupervised_Anomaly_Detection_Brain_MRI, ``models/variational_autoencoder.py``, ``trainers/VAE.py``):

- encoder: 5×5 stride-2 convs with 32, 64, 128 channels, batch norm, LeakyReLU; a 1×1 conv to C/8
  channels, flatten, dense ``mu`` and ``log σ²``; **latent size 128** (``zDim=128``); dropout 0.1 on
  the latent heads and on the decoder's first dense layer during training;
- decoder: dense, 1×1 conv back to C channels, 5×5 stride-2 transposed convs with 128, 64, 32
  channels, 1×1 conv to one channel with no output activation;
- loss: ELBO with **L1** reconstruction summed over the pixels plus the KL term summed over the latent
  dimensions (β = 1), averaged over the batch; Adam, lr 1e-4.

Choices where the sources are silent or do not fit this grid:

- Baur's rule ``int(log2(W) − log2(8))`` gives 3 stride-2 stages on 96² slices, so the dense
  bottleneck sits at 12×12 (16 channels); on the 48² demo grid 3 stages give 6×6.
- The mDDPM paper sets VAE hyperparameters "according to" pDDPM (Behrendt et al. 2023) and trains all
  models 1600 epochs; we use pDDPM's regime (batch 32, 1600 × 12 = 19,200 steps).
- Test time: ``x̂ = decoder(mu)`` (no sampling, no dropout); Baur's code samples z also at test.
- ``recon_loss="l2"`` and ``beta`` are options; the faithful default is L1 and β = 1.
- All randomness (z, dropout) is drawn from the step's ``torch.Generator``.
"""

from __future__ import annotations

import torch

from mddpm.errors import MddpmError
from mddpm.methods.base import AnomalyMethod
from mddpm.nets.autoencoders import SliceVAE
from mddpm.registry import register_method


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, σ²) ‖ N(0, I)) summed over the last axis: ``[..., L]`` -> ``[...]``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(-1)


def reconstruction_error(x: torch.Tensor, x_hat: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Per-image error summed over the pixels: ``[B, ...]`` -> ``[B]`` (``kind`` "l1" or "l2")."""
    diff = x_hat - x
    err = diff.abs() if kind == "l1" else diff.pow(2)
    return err.flatten(1).sum(1)


def check_slice_size(method: str, image: torch.Tensor, image_size: int) -> None:
    """Raise a one-line :class:`MddpmError` when the slices do not match the model's ``image_size``."""
    h, w = image.shape[-2:]
    if (h, w) != (image_size, image_size):
        raise MddpmError(f"{method}: model.image_size is {image_size} but the slices are {h}x{w}; "
                         f"use the preset of this grid or --set model.image_size={h}")


class VAEMethod(AnomalyMethod):
    """Slice VAE: ``training_loss`` = mean negative ELBO; ``reconstruct`` = decoder(mu)."""

    def __init__(self, image_size: int = 96, latent_dim: int = 128, num_down: int = 3, base_channels: int = 32,
                 max_channels: int = 128, bottleneck_reduction: int = 8, dropout: float = 0.1, beta: float = 1.0,
                 recon_loss: str = "l1"):
        super().__init__()
        if recon_loss not in ("l1", "l2"):
            raise MddpmError(f"vae: model.recon_loss must be 'l1' or 'l2', got {recon_loss!r}")
        self.image_size, self.beta, self.recon_loss = image_size, beta, recon_loss
        self.net = SliceVAE(image_size, latent_dim, num_down, base_channels, max_channels, bottleneck_reduction,
                            dropout)

    def training_loss(self, batch: dict, generator: torch.Generator, step: int = 0) -> torch.Tensor:
        x = batch["image"]
        check_slice_size("vae", x, self.image_size)
        x_hat, mu, logvar = self.net(x, generator)
        return (reconstruction_error(x, x_hat, self.recon_loss) + self.beta * kl_divergence(mu, logvar)).mean()

    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        check_slice_size("vae", image, self.image_size)
        return self.net(image, generator, sample=False)[0]


@register_method(
    "vae",
    "2-D slice VAE: dense latent 128, L1 + KL (Baur et al. 2021; 19,200 steps)",
    reference="Baur, Denner, Wiestler, Navab, Albarqouni. Autoencoders for unsupervised anomaly segmentation "
              "in brain MR images: a comparative study. Medical Image Analysis 69:101952 (2021)",
)
def build(model_cfg: dict) -> VAEMethod:
    return VAEMethod(**model_cfg)
