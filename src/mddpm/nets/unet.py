"""Time-conditioned 2-D U-Net in the layout of the OpenAI guided-diffusion / LDM U-Net.

Layout (protocol.md §2.1), written for this project:

- time embedding: sinusoidal features of dim ``model_channels`` -> Linear -> SiLU -> Linear to
  ``time_embed_mult * model_channels``;
- input blocks: a 3x3 stem conv, then per level ``num_res_blocks`` ResBlocks, and between levels a
  down-sampling step (a ResBlock with average pooling inside when ``resblock_updown``, else a
  stride-2 conv);
- middle: ResBlock, self-attention, ResBlock (the only attention in the net);
- output blocks: per level (deepest first) ``num_res_blocks + 1`` ResBlocks, each fed the
  concatenation of the running features and one saved skip, and between levels an up-sampling step
  (a ResBlock with nearest up-sampling inside, else nearest + conv);
- out: GroupNorm -> SiLU -> zero-initialised 3x3 conv.

The last conv of every ResBlock, the attention output projection and the output conv start at zero,
so a fresh net outputs exactly 0. GroupNorm is computed in float32 whatever the input dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of timesteps ``t [B]`` (int or float) -> ``[B, dim]`` float32, [cos | sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm evaluated in float32, cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).to(x.dtype)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block ``[B, ch, H, W] -> [B, out_ch, H', W']`` conditioned on ``emb [B, emb_ch]``.

    ``resample``: None, "down" (2x2 average pooling) or "up" (2x nearest), applied between the first
    norm/activation and the first conv, and to the skip path. With ``scale_shift_norm`` the
    embedding gives (scale, shift) applied after the second GroupNorm: ``norm(h) * (1 + scale) +
    shift``; otherwise it is added before that norm.
    """

    def __init__(self, ch: int, emb_ch: int, out_ch: int, groups: int, dropout: float,
                 scale_shift_norm: bool, resample: str | None = None, use_checkpoint: bool = False):
        super().__init__()
        self.resample = resample
        self.scale_shift_norm = scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.in_norm = GroupNorm32(groups, ch)
        self.in_conv = nn.Conv2d(ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_ch, 2 * out_ch if scale_shift_norm else out_ch)
        self.out_norm = GroupNorm32(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if out_ch == ch else nn.Conv2d(ch, out_ch, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return x

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_conv(self._resample(F.silu(self.in_norm(x))))
        e = self.emb_proj(F.silu(emb)).to(h.dtype)[:, :, None, None]
        if self.scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_norm(h) * (1 + scale) + shift
        else:
            h = self.out_norm(h + e)
        h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(self._resample(x)) + h

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return activation_checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the ``H*W`` positions of ``[B, ch, H, W]``, residual.

    Heads of ``head_channels`` channels; q, k, v from a 1x1 projection of the GroupNorm'd input;
    the output projection starts at zero.
    """

    def __init__(self, ch: int, head_channels: int, groups: int, use_checkpoint: bool = False):
        super().__init__()
        if ch % head_channels:
            raise ValueError(f"attention channels {ch} not divisible by head_channels {head_channels}")
        self.heads = ch // head_channels
        self.use_checkpoint = use_checkpoint
        self.norm = GroupNorm32(groups, ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv1d(ch, ch, 1))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, hgt * wid))  # [B, 3C, L]
        q, k, v = (t.reshape(b, self.heads, c // self.heads, hgt * wid).transpose(-1, -2) for t in qkv.chunk(3, dim=1))
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, L, hc]
        out = self.proj(out.transpose(-1, -2).reshape(b, c, hgt * wid))
        return x + out.reshape(b, c, hgt, wid)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return activation_checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class Downsample(nn.Module):
    """Stride-2 3x3 conv (used when ``resblock_updown`` is False)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """2x nearest up-sampling then a 3x3 conv (used when ``resblock_updown`` is False)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Stage(nn.Sequential):
    """A sequence of blocks that all take ``(x, emb)``."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, emb) if not isinstance(block, nn.Conv2d) else block(x)
        return x


class UNet(nn.Module):
    """Time-conditioned U-Net: ``forward(x [B, in, H, W], t [B]) -> [B, out, H, W]``.

    H and W must be divisible by ``2 ** (len(channel_mult) - 1)``. Defaults are the mDDPM/pDDPM
    network (37.5 M parameters); ``scale_shift_norm=False`` gives the unpatched-DDPM baseline's.
    ``checkpoint`` recomputes block activations in the backward pass (as the published code did).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, model_channels: int = 128,
                 channel_mult: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 3, head_channels: int = 64,
                 scale_shift_norm: bool = True, resblock_updown: bool = True, groups: int = 32,
                 dropout: float = 0.0, time_embed_mult: int = 4, checkpoint: bool = False):
        super().__init__()
        self.config = dict(in_channels=in_channels, out_channels=out_channels, model_channels=model_channels,
                           channel_mult=tuple(channel_mult), num_res_blocks=num_res_blocks,
                           head_channels=head_channels, scale_shift_norm=scale_shift_norm,
                           resblock_updown=resblock_updown, groups=groups, dropout=dropout,
                           time_embed_mult=time_embed_mult, checkpoint=checkpoint)
        self.model_channels = model_channels
        self.downsample_factor = 2 ** (len(channel_mult) - 1)
        emb_ch = time_embed_mult * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))

        def res(ch_in: int, ch_out: int, resample: str | None = None) -> ResBlock:
            return ResBlock(ch_in, emb_ch, ch_out, groups, dropout, scale_shift_norm, resample, checkpoint)

        self.input_blocks = nn.ModuleList([Stage(nn.Conv2d(in_channels, model_channels, 3, padding=1))])
        skip_channels = [model_channels]
        ch = model_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.input_blocks.append(Stage(res(ch, mult * model_channels)))
                ch = mult * model_channels
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(Stage(res(ch, ch, "down") if resblock_updown else Downsample(ch)))
                skip_channels.append(ch)

        self.middle_block = Stage(res(ch, ch), AttentionBlock(ch, head_channels, groups, checkpoint), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                blocks: list[nn.Module] = [res(ch + skip_channels.pop(), mult * model_channels)]
                ch = mult * model_channels
                if level and i == num_res_blocks:
                    blocks.append(res(ch, ch, "up") if resblock_updown else Upsample(ch))
                self.output_blocks.append(Stage(*blocks))

        self.out = nn.Sequential(GroupNorm32(groups, ch), nn.SiLU(), _zero(nn.Conv2d(ch, out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x [B, in, H, W]``, ``t [B]`` timesteps (int or float) -> ``[B, out, H, W]``."""
        if x.shape[-2] % self.downsample_factor or x.shape[-1] % self.downsample_factor:
            raise ValueError(f"U-Net input {tuple(x.shape[-2:])} not divisible by {self.downsample_factor}")
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        features = timestep_embedding(t.to(x.device), self.model_channels)
        emb = self.time_embed(features.to(self.time_embed[0].weight.dtype))
        h = x
        skips = []
        for stage in self.input_blocks:
            h = stage(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for stage in self.output_blocks:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
