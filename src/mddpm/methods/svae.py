"""``svae``: the sequential VAE baseline of Table 1 (Behrendt, Bengs, Rogge, Krüger, Opfer, Schlaefer
2022, "Capturing inter-slice dependencies of 3D brain MRI-scans for unsupervised anomaly detection",
MIDL short paper).

Behrendt et al. keep a slice-wise 2-D VAE and link the latent representations of the slices of one
volume with a sequence model (an RNN or a transformer with self-attention); we implement the
transformer variant. What we take from the sources:

- slice encoder/decoder and ELBO (L1 summed over pixels + KL summed over latent dims, β = 1, latent
  size 128, dropout 0.1) exactly as :mod:`mddpm.methods.vae` (Baur et al.'s dense VAE), so the two
  rows differ only by the sequence model;
- batches are whole volumes (``sample_unit = "volume"``): ``{"image": [B, S, H, W], "mask": ...}``.

Choices (the short paper gives no layer-level numbers; none of these come from it):

- where the sequence model sits: each slice's flattened bottleneck features are projected to
  ``d_model`` tokens, sinusoidal positional encodings of the slice index are added, a pre-norm
  transformer encoder (``num_layers=2``, ``num_heads=8``, ``d_model=256``, feed-forward 1024, no
  internal dropout) mixes the slices, and the posterior heads ``mu``/``log σ²`` read its output; z is
  then decoded slice by slice;
- training regime: 4 volumes per step (200 slices at 96×96×50), 19,200 steps (as the slice VAE's
  step count), Adam lr 1e-4;
- test time: ``x̂ = decoder(mu)`` for all slices of the volume at once, in slice order.
"""

from __future__ import annotations

import torch

from mddpm.errors import MddpmError
from mddpm.methods.base import AnomalyMethod
from mddpm.methods.vae import check_slice_size, kl_divergence, reconstruction_error
from mddpm.nets.autoencoders import SequenceVAE
from mddpm.registry import register_method


class SVAEMethod(AnomalyMethod):
    """Volume-wise VAE: ``training_loss`` = negative ELBO per slice, averaged over volumes and slices."""

    sample_unit = "volume"

    def __init__(self, image_size: int = 96, latent_dim: int = 128, num_down: int = 3, base_channels: int = 32,
                 max_channels: int = 128, bottleneck_reduction: int = 8, dropout: float = 0.1, beta: float = 1.0,
                 recon_loss: str = "l1", d_model: int = 256, num_heads: int = 8, num_layers: int = 2,
                 ff_dim: int = 1024):
        super().__init__()
        if recon_loss not in ("l1", "l2"):
            raise MddpmError(f"svae: model.recon_loss must be 'l1' or 'l2', got {recon_loss!r}")
        self.image_size, self.beta, self.recon_loss = image_size, beta, recon_loss
        self.net = SequenceVAE(image_size, latent_dim, num_down, base_channels, max_channels, bottleneck_reduction,
                               dropout, d_model, num_heads, num_layers, ff_dim)

    def training_loss(self, batch: dict, generator: torch.Generator, step: int = 0) -> torch.Tensor:
        x = batch["image"]  # [B, S, H, W]
        if x.dim() != 4:
            raise MddpmError(f"svae: expected volume batches [B, S, H, W], got shape {tuple(x.shape)}")
        check_slice_size("svae", x, self.image_size)
        x_hat, mu, logvar = self.net(x, generator)
        b, s = x.shape[:2]
        rec = reconstruction_error(x.reshape(b * s, -1), x_hat.reshape(b * s, -1), self.recon_loss)
        return (rec + self.beta * kl_divergence(mu, logvar).reshape(b * s)).mean()

    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One volume's slices ``[S, 1, H, W]`` in order -> ``[S, 1, H, W]``."""
        check_slice_size("svae", image, self.image_size)
        x_hat = self.net(image[:, 0][None], generator, sample=False)[0]  # [1, S, H, W]
        return x_hat[0][:, None]


@register_method(
    "svae",
    "slice VAE with a transformer over the slices of a volume (Behrendt et al. 2022; 19,200 steps of 4 volumes)",
    reference="Behrendt, Bengs, Rogge, Krüger, Opfer, Schlaefer. Capturing inter-slice dependencies of 3D brain "
              "MRI-scans for unsupervised anomaly detection. MIDL 2022 (short paper)",
)
def build(model_cfg: dict) -> SVAEMethod:
    return SVAEMethod(**model_cfg)
