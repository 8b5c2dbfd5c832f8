"""``fanogan``: the f-AnoGAN baseline of Table 1 (Schlegl, Seeböck, Waldstein, Langs, Schmidt-Erfurth
2019, "f-AnoGAN: fast unsupervised anomaly detection with generative adversarial networks", MedIA 54).

Two stages, one optimiser each (``param_groups() = [critic, generator, encoder]``):

1. **WGAN-GP** (Gulrajani et al. 2017, as Schlegl): for the first ``gan_steps`` optimiser steps, cycles
   of ``n_critic = 5`` critic steps then one generator step. Critic loss
   ``D(G(z)) − D(x) + λ·E[(‖∇D(x̃)‖₂ − 1)²]`` with ``x̃ = x + α(G(z) − x)``, α ~ U(0, 1) per image,
   **λ = 10**; generator loss ``−D(G(z))``; z ~ N(0, I), **latent size 128**; Adam **lr 1e-4, betas
   (0, 0.9)** (given by :meth:`optimizer_options`).
2. **izi_f encoder** (generator and critic frozen): ``x -> E -> z -> G -> x̂``, loss
   ``MSE(x̂, x) + κ·MSE(f(x̂), f(x))`` with f the critic's last feature map, **κ = 1**.

Score: ``score="image"`` (default) is the image residual |x − G(E(x))|, as Schlegl's pixel-level
localisation. ``score="image+feature"`` adds κ times the per-slice critic-feature residual
(:meth:`feature_residual`, Schlegl's A_D) inside the brain mask, i.e. Schlegl's image-level score
A = A_R + κ·A_D spread over the slice.

Choices: networks are DCGAN-like (:mod:`mddpm.nets.gan`; Schlegl used ResNets at 64²) with layer norm
in critic and generator; the generator ends in a sigmoid because slices are in [0, 1]; the encoder
ends in tanh (Schlegl). The mDDPM paper sets f-AnoGAN hyperparameters "according to" pDDPM, which
states none; our regime is pDDPM's 1600 epochs × 12 = 19,200 generator steps (× 6 optimiser steps
with the critic = 115,200 GAN steps), then 19,200 encoder steps, batch 32. ``validation_loss`` is the
izi_f loss (so the best checkpoint is chosen on the encoder's reconstruction).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from mddpm.errors import MddpmError
from mddpm.methods.base import AnomalyMethod
from mddpm.methods.vae import check_slice_size
from mddpm.nets.gan import Critic, Generator, LatentEncoder
from mddpm.registry import register_method

CRITIC, GENERATOR, ENCODER = 0, 1, 2

def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator) -> torch.Tensor:
    """WGAN-GP penalty ``mean_b (‖∇_x̃ critic(x̃_b)‖₂ − 1)²`` (without λ).

    ``x̃ = real + α(fake − real)`` with α ~ U(0, 1) per image; ``critic`` maps ``[B, ...]`` to scores
    ``[B]``. The result keeps the graph (``create_graph``), so it trains the critic.
    """
    alpha = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), generator=generator, device=real.device)
    mixed = (real + alpha.to(real.dtype) * (fake - real)).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).pow(2).mean()


class FAnoGANMethod(AnomalyMethod):
    """WGAN-GP + izi_f encoder; ``training_loss`` returns the loss of the optimiser :meth:`optimizer_index` names."""

    map_is_residual = False  # the residual plus the critic-feature term (score "image+feature")

    def __init__(self, image_size: int = 96, latent_dim: int = 128, num_stages: int = 4, base_channels: int = 64,
                 max_channels: int = 512, encoder_base_channels: int = 32, encoder_max_channels: int = 128,
                 encoder_tanh: bool = True, n_critic: int = 5, gp_weight: float = 10.0, kappa: float = 1.0,
                 gan_steps: int = 115200, adam_betas: list | tuple = (0.0, 0.9), score: str = "image"):
        super().__init__()
        if score not in ("image", "image+feature"):
            raise MddpmError(f"fanogan: model.score must be 'image' or 'image+feature', got {score!r}")
        if n_critic < 1:
            raise MddpmError(f"fanogan: model.n_critic must be >= 1, got {n_critic}")
        self.image_size, self.latent_dim = image_size, latent_dim
        self.n_critic, self.gp_weight, self.kappa, self.gan_steps = n_critic, gp_weight, kappa, gan_steps
        self.adam_betas, self.score = tuple(adam_betas), score
        self.image_generator = Generator(image_size, latent_dim, num_stages, base_channels, max_channels)
        self.critic = Critic(image_size, num_stages, base_channels, max_channels)
        self.latent_encoder = LatentEncoder(image_size, latent_dim, num_stages, encoder_base_channels,
                                            encoder_max_channels, encoder_tanh)

    # --- optimisation schedule -------------------------------------------------------------------
    def param_groups(self) -> list[list[torch.nn.Parameter]]:
        return [list(self.critic.parameters()), list(self.image_generator.parameters()),
                list(self.latent_encoder.parameters())]

    def optimizer_index(self, step: int) -> int:
        if step >= self.gan_steps:
            return ENCODER
        return CRITIC if step % (self.n_critic + 1) < self.n_critic else GENERATOR

    def optimizer_options(self) -> list[dict]:
        """Extra ``torch.optim.Adam`` keyword arguments per parameter group."""
        return [{"betas": self.adam_betas} for _ in range(3)]

    # --- losses -----------------------------------------------------------------------------------
    def _sample_z(self, n: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
        return torch.randn((n, self.latent_dim), generator=generator, device=like.device).to(like.dtype)

    def critic_loss(self, real: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            fake = self.image_generator(self._sample_z(real.shape[0], generator, real))
        wasserstein = self.critic(fake)[0].mean() - self.critic(real)[0].mean()
        gp = gradient_penalty(lambda v: self.critic(v)[0], real, fake, generator)
        return wasserstein + self.gp_weight * gp

    def generator_loss(self, real: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return -self.critic(self.image_generator(self._sample_z(real.shape[0], generator, real)))[0].mean()

    def encoder_loss(self, real: torch.Tensor) -> torch.Tensor:
        recon = self.image_generator(self.latent_encoder(real))
        with torch.no_grad():
            f_real = self.critic(real)[1]
        return F.mse_loss(recon, real) + self.kappa * F.mse_loss(self.critic(recon)[1], f_real)

    def training_loss(self, batch: dict, generator: torch.Generator, step: int = 0) -> torch.Tensor:
        x = batch["image"]
        check_slice_size("fanogan", x, self.image_size)
        stage = self.optimizer_index(step)
        if stage == CRITIC:
            return self.critic_loss(x, generator)
        if stage == GENERATOR:
            return self.generator_loss(x, generator)
        return self.encoder_loss(x)

    def validation_loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        check_slice_size("fanogan", batch["image"], self.image_size)
        return self.encoder_loss(batch["image"])

    # --- scoring ----------------------------------------------------------------------------------
    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        check_slice_size("fanogan", image, self.image_size)
        return self.image_generator(self.latent_encoder(image))

    def feature_residual(self, image: torch.Tensor, recon: torch.Tensor | None = None) -> torch.Tensor:
        """Schlegl's A_D per slice: mean squared critic-feature residual, ``[S, 1, H, W]`` -> ``[S]``."""
        if recon is None:
            recon = self.image_generator(self.latent_encoder(image))
        return (self.critic(image)[1] - self.critic(recon)[1]).pow(2).flatten(1).mean(1)

    def anomaly_map(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        recon = self.reconstruct(image, mask, generator)
        residual = (image - recon).abs()
        if self.score == "image":
            return residual
        return residual + self.kappa * self.feature_residual(image, recon).view(-1, 1, 1, 1) * mask


@register_method(
    "fanogan",
    "f-AnoGAN: WGAN-GP, then izi_f encoder; image-residual score (Schlegl et al. 2019; 115,200 + 19,200 steps)",
    reference="Schlegl, Seeböck, Waldstein, Langs, Schmidt-Erfurth. f-AnoGAN: fast unsupervised anomaly detection "
              "with generative adversarial networks. Medical Image Analysis 54:30-44 (2019)",
)
def build(model_cfg: dict) -> FAnoGANMethod:
    return FAnoGANMethod(**model_cfg)
