"""Anomaly scores from an input and its reconstruction (slices ``[B, 1, H, W]`` in [0, 1] units).

- ``"l1"`` (the published score): ``|x − x̂|``.
- ``"ssim-l1"`` (pDDPM-IQA's fused score, an option): ``α·(1 − SSIM(x, x̂)) + (1 − α)·|x − x̂|`` with
  ``α = 0.84``, where SSIM is the local SSIM map (Wang et al. 2004: Gaussian window σ = 1.5 px,
  11 × 11, K1 = 0.01, K2 = 0.03, data range 1). The window is applied with reflect padding, so the
  map has the input's size. ``1 − SSIM`` lies in [0, 2].
- ``"signed"`` (an option): ``max(x − x̂, 0)``, hyperintense differences only (T2/FLAIR lesions are
  mostly bright; a dark lesion, e.g. a haemorrhage's core, is then invisible).
- ``"mahalanobis"`` (Behrendt et al. 2024, an option): from K stochastic reconstructions (independent
  noise draws) with per-pixel mean ``μ`` and variance ``σ²``, the distance ``|x − μ| / sqrt(σ² + ε)``
  (diagonal covariance, ``ε = MAHALANOBIS_EPS`` regularises it where the reconstructions agree);
  ``"mahalanobis-local"`` estimates ``σ²`` as the mean variance over a 5 × 5 neighbourhood (a local,
  still diagonal, estimate: steadier with few samples). A deterministic method gives ``σ = 0``, i.e. the
  l1 score divided by ``sqrt(ε)``. Costs K reconstructions per slice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCORES = ("l1", "ssim-l1", "signed", "mahalanobis", "mahalanobis-local")
SAMPLED_SCORES = ("mahalanobis", "mahalanobis-local")  # scores from several reconstructions
MAHALANOBIS_SAMPLES = 8  # default K
MAHALANOBIS_EPS = 1e-4  # variance floor, in [0, 1] intensity units squared (σ floor 0.01)
MAHALANOBIS_WINDOW = 5
SSIM_L1_ALPHA = 0.84
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, device=None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian ``[size]`` centred on the middle tap."""
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of ``[B, C, H, W]`` per channel, reflect padding (same size)."""
    c, k = x.shape[1], window.numel()
    x = F.pad(x, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    x = F.conv2d(x, window.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, window.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window_size: int = SSIM_WINDOW,
             sigma: float = SSIM_SIGMA, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Local SSIM of ``x`` and ``y`` ``[B, C, H, W]`` (computed in float32): same shape, values in [−1, 1]."""
    x, y = x.float(), y.float()
    window = gaussian_window(window_size, sigma, device=x.device)
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    var_x = _blur(x * x, window) - mu_x**2
    var_y = _blur(y * y, window) - mu_y**2
    cov = _blur(x * y, window) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def anomaly_score(image: torch.Tensor, reconstruction: torch.Tensor, score: str = "l1",
                  alpha: float = SSIM_L1_ALPHA) -> torch.Tensor:
    """Score map ``[B, 1, H, W]`` float32 of ``image`` against ``reconstruction`` (see module docstring)."""
    l1 = (image.float() - reconstruction.float()).abs()
    if score == "l1":
        return l1
    if score == "signed":
        return (image.float() - reconstruction.float()).clamp(min=0)
    if score == "ssim-l1":
        return alpha * (1 - ssim_map(image, reconstruction)) + (1 - alpha) * l1
    raise ValueError(f"unknown score {score!r} (known: {', '.join(SCORES)})")


def mahalanobis_score(image: torch.Tensor, reconstructions: torch.Tensor, local: bool = False,
                      eps: float = MAHALANOBIS_EPS) -> torch.Tensor:
    """Per-pixel Mahalanobis distance ``[B, 1, H, W]`` float32 of ``image`` from ``reconstructions``
    ``[K, B, 1, H, W]`` (diagonal covariance; ``local``: variance averaged over a 5 × 5 window)."""
    recon = reconstructions.float()
    mean, var = recon.mean(0), recon.var(0, unbiased=False)
    if local:
        pad = MAHALANOBIS_WINDOW // 2
        var = F.avg_pool2d(var, MAHALANOBIS_WINDOW, stride=1, padding=pad, count_include_pad=False)
    return (image.float() - mean).abs() / torch.sqrt(var + eps)
