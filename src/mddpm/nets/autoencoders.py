"""Autoencoder networks of the baselines (tensors in, tensors out; losses live in ``mddpm.methods``).

- :class:`ConvEncoder` / :class:`ConvDecoder`: the "unified" 2-D encoder and decoder of Baur et al.
  2021 (MedIA 69:101952; layer plan as in their published code): ``n`` stages of 5×5 stride-2 conv,
  batch norm (PyTorch defaults), LeakyReLU (slope 0.3, the Keras default they used) with
  ``min(max_channels, base·2^i)`` channels, mirrored by 5×5 stride-2 transposed convs with
  ``max(base, max_channels/2^i)`` channels and a final 1×1 conv (identity activation).
- :class:`SliceVAE`: Baur's dense-bottleneck VAE on ``[B, 1, H, W]`` slices (1×1 conv to ``C/8``
  channels, flatten, dense ``mu``/``log σ²``; dense back, 1×1 conv to ``C``, decoder).
- :class:`SequenceVAE`: the SVAE of Behrendt et al. 2022: the same slice encoder, with the per-slice
  features of one volume linked by a transformer encoder over the slice axis (sinusoidal positional
  encoding) before the posterior heads; the decoder works per slice.
- :class:`PlainUNet`: Kascenas et al. 2022's denoising U-Net (not time-conditioned): two
  weight-standardised 3×3 convs with reflection padding, Swish and GroupNorm per level, average-pool
  down, 2×2 transposed-conv up, 1×1 output.

Every random operation (latent sampling, dropout) takes an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def generator_dropout(x: torch.Tensor, p: float, generator: torch.Generator | None, training: bool) -> torch.Tensor:
    """Inverted dropout with an explicit generator (identity when not training or ``p == 0``)."""
    if not training or p <= 0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep / (1.0 - p)


LEAKY_SLOPE = 0.3  # the Keras LeakyReLU default, which Baur et al.'s encoder and decoder use


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # layer norm over (C, H, W) with a per-channel affine
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r} (known: batch, layer, none)")


def encoder_channels(num_down: int, base_channels: int, max_channels: int) -> list[int]:
    """Channels after each stride-2 stage of :class:`ConvEncoder`."""
    return [min(max_channels, base_channels * 2**i) for i in range(num_down)]


class ConvEncoder(nn.Module):
    """``[B, 1, H, W]`` -> ``[B, C, H/2^n, W/2^n]`` with ``C = encoder_channels(...)[-1]``."""

    def __init__(self, num_down: int = 3, base_channels: int = 32, max_channels: int = 128, norm: str = "batch",
                 in_channels: int = 1):
        super().__init__()
        layers, prev = [], in_channels
        for ch in encoder_channels(num_down, base_channels, max_channels):
            layers += [nn.Conv2d(prev, ch, 5, stride=2, padding=2), _norm(norm, ch), nn.LeakyReLU(LEAKY_SLOPE)]
            prev = ch
        self.layers = nn.Sequential(*layers)
        self.out_channels = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ConvDecoder(nn.Module):
    """``[B, C, r, r]`` -> ``[B, 1, r·2^n, r·2^n]``: norm, ReLU, ``n`` × (5×5 stride-2 transposed conv,
    norm, LeakyReLU), 1×1 conv to one channel (no output activation)."""

    def __init__(self, in_channels: int, num_up: int = 3, base_channels: int = 32, max_channels: int = 128,
                 norm: str = "batch"):
        super().__init__()
        layers: list[nn.Module] = [_norm(norm, in_channels), nn.ReLU()]
        prev = in_channels
        for i in range(num_up):
            ch = max(base_channels, max_channels // 2**i)
            layers += [nn.ConvTranspose2d(prev, ch, 5, stride=2, padding=2, output_padding=1), _norm(norm, ch),
                       nn.LeakyReLU(LEAKY_SLOPE)]
            prev = ch
        layers.append(nn.Conv2d(prev, 1, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layers(h)


class DenseCoder(nn.Module):
    """Baur's conv encoder + dense bottleneck, without the posterior heads.

    ``features(x [B,1,H,W]) -> [B, feature_dim]``; ``decode(z [B, latent_dim]) -> [B,1,H,W]``.
    ``image_size`` must be divisible by ``2**num_down``.
    """

    def __init__(self, image_size: int, latent_dim: int, num_down: int, base_channels: int, max_channels: int,
                 bottleneck_reduction: int, dropout: float):
        super().__init__()
        if image_size % 2**num_down:
            raise ValueError(f"image_size {image_size} is not divisible by 2**num_down = {2**num_down}")
        self.image_size = image_size
        self.dropout = dropout
        self.encoder = ConvEncoder(num_down, base_channels, max_channels, "batch")
        channels = self.encoder.out_channels
        self.reduced = max(1, channels // bottleneck_reduction)
        self.res = image_size // 2**num_down
        self.feature_dim = self.reduced * self.res**2
        self.reduce = nn.Conv2d(channels, self.reduced, 1)
        self.expand = nn.Linear(latent_dim, self.feature_dim)
        self.unreduce = nn.Conv2d(self.reduced, channels, 1)
        self.decoder = ConvDecoder(channels, num_down, base_channels, max_channels, "batch")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.encoder(x)).flatten(1)

    def decode(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h = generator_dropout(self.expand(z), self.dropout, generator, self.training)
        h = h.view(-1, self.reduced, self.res, self.res)
        return self.decoder(self.unreduce(h))


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """z = mu + σ·ε, ε ~ N(0, I) drawn from ``generator``."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar)


class SliceVAE(nn.Module):
    """2-D VAE with a dense latent (Baur et al. 2021).

    ``forward(x [B,1,H,W], generator, sample) -> (x̂ [B,1,H,W], mu [B,L], logvar [B,L])``; with
    ``sample=False`` the decoder gets the posterior mean.
    """

    def __init__(self, image_size: int, latent_dim: int = 128, num_down: int = 3, base_channels: int = 32,
                 max_channels: int = 128, bottleneck_reduction: int = 8, dropout: float = 0.1):
        super().__init__()
        self.coder = DenseCoder(image_size, latent_dim, num_down, base_channels, max_channels, bottleneck_reduction,
                                dropout)
        self.mu = nn.Linear(self.coder.feature_dim, latent_dim)
        self.logvar = nn.Linear(self.coder.feature_dim, latent_dim)

    def posterior(self, x: torch.Tensor, generator: torch.Generator | None = None):
        h = self.coder.features(x)
        p, train = self.coder.dropout, self.training
        return (generator_dropout(self.mu(h), p, generator, train),
                generator_dropout(self.logvar(h), p, generator, train))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True):
        mu, logvar = self.posterior(x, generator)
        z = reparameterize(mu, logvar, generator) if sample else mu
        return self.coder.decode(z, generator), mu, logvar


def sinusoidal_positions(length: int, dim: int, device=None) -> torch.Tensor:
    """Vaswani et al.'s fixed positional encoding, ``[length, dim]`` (dim even)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    enc = torch.zeros(length, dim, device=device)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq)
    return enc


class SequenceVAE(nn.Module):
    """SVAE: slice-wise VAE whose posteriors see the whole volume through a transformer over slices.

    ``forward(x [B,S,H,W], generator, sample) -> (x̂ [B,S,H,W], mu [B,S,L], logvar [B,S,L])``.
    """

    def __init__(self, image_size: int, latent_dim: int = 128, num_down: int = 3, base_channels: int = 32,
                 max_channels: int = 128, bottleneck_reduction: int = 8, dropout: float = 0.1, d_model: int = 256,
                 num_heads: int = 8, num_layers: int = 2, ff_dim: int = 1024):
        super().__init__()
        if d_model % 2 or d_model % num_heads:
            raise ValueError(f"d_model {d_model} must be even and divisible by num_heads {num_heads}")
        self.coder = DenseCoder(image_size, latent_dim, num_down, base_channels, max_channels, bottleneck_reduction,
                                dropout)
        self.to_tokens = nn.Linear(self.coder.feature_dim, d_model)
        # dropout 0 inside the transformer: all randomness stays on the explicit generator
        layer = nn.TransformerEncoderLayer(d_model, num_heads, ff_dim, dropout=0.0, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.mu = nn.Linear(d_model, latent_dim)
        self.logvar = nn.Linear(d_model, latent_dim)

    def posterior(self, x: torch.Tensor, generator: torch.Generator | None = None):
        b, s, h, w = x.shape
        feats = self.coder.features(x.reshape(b * s, 1, h, w)).view(b, s, -1)
        tokens = self.to_tokens(feats) + sinusoidal_positions(s, self.to_tokens.out_features, x.device).to(feats.dtype)
        t = self.transformer(tokens)
        p, train = self.coder.dropout, self.training
        return (generator_dropout(self.mu(t), p, generator, train),
                generator_dropout(self.logvar(t), p, generator, train))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True):
        b, s, h, w = x.shape
        mu, logvar = self.posterior(x, generator)
        z = reparameterize(mu, logvar, generator) if sample else mu
        x_hat = self.coder.decode(z.reshape(b * s, -1), generator).view(b, s, h, w)
        return x_hat, mu, logvar


class WSConv2d(nn.Conv2d):
    """Conv2d with weight standardisation (Qiao et al. 2019): each filter is shifted to zero mean and
    divided by its (unbiased) standard deviation + 1e-5 before the convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        flat = w.flatten(1)
        w = (w - flat.mean(1).view(-1, 1, 1, 1)) / (flat.std(1).view(-1, 1, 1, 1) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def middle_divisor(n: int) -> int:
    """The median divisor of ``n`` (upper median), used as the GroupNorm group count (64 -> 8, 128 -> 16)."""
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return divisors[len(divisors) // 2]


class _UNetBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.ReflectionPad2d(1), WSConv2d(cin, cout, 3), nn.SiLU(), nn.GroupNorm(middle_divisor(cout), cout),
            nn.ReflectionPad2d(1), WSConv2d(cout, cout, 3), nn.SiLU(), nn.GroupNorm(middle_divisor(cout), cout),
        )


class PlainUNet(nn.Module):
    """Kascenas et al.'s U-Net: ``[B, C, H, W]`` -> ``[B, C_out, H, W]``; H, W divisible by ``2**(depth-1)``.

    Level ``i`` has ``base_channels·2^i`` channels (Kascenas: depth 4, base 64).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, depth: int = 4, base_channels: int = 64):
        super().__init__()
        chans = [base_channels * 2**i for i in range(depth)]
        self.down = nn.ModuleList()
        prev = in_channels
        for ch in chans:
            self.down.append(_UNetBlock(prev, ch))
            prev = ch
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for ch in reversed(chans[:-1]):
            self.ups.append(nn.ConvTranspose2d(prev, ch, 2, stride=2))
            self.up_blocks.append(_UNetBlock(2 * ch, ch))
            prev = ch
        self.out = nn.Conv2d(prev, out_channels, 1)
        self.multiple = 2 ** (depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = F.avg_pool2d(x, 2)
        for up, block in zip(self.ups, self.up_blocks):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.out(x)
