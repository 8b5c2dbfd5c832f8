"""Cosine schedule, forward process and one-step x0 reconstruction."""

from __future__ import annotations

import math

import pytest
import torch

from mddpm.diffusion import GaussianDiffusion, cosine_alphas_cumprod, from_model_range, to_model_range


def f_cos(u: float) -> float:
    """The cosine schedule's f(u) for T = 1000, s = 0.008 (float64 Python arithmetic)."""
    return math.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2


def test_cosine_schedule_values():
    ac = cosine_alphas_cumprod()
    assert ac.dtype == torch.float64 and ac.shape == (1000,)
    # protocol.md §2.2 (measured on the published wrapper): ᾱ, √ᾱ, √(1−ᾱ) at t = 499
    assert abs(ac[499].item() - 0.4938) < 1e-4
    assert abs(ac[499].sqrt().item() - 0.7027) < 1e-4
    assert abs((1 - ac[499]).sqrt().item() - 0.7114) < 1e-4
    assert torch.all(ac[1:] < ac[:-1])  # strictly decreasing
    # before the clip, ᾱ_t = f(t + 1) / f(0)
    assert ac[0].item() == pytest.approx(f_cos(1) / f_cos(0), rel=1e-12)
    assert ac[499].item() == pytest.approx(f_cos(500) / f_cos(0), rel=1e-9)


def test_beta_clipping_at_the_end_of_the_schedule():
    ac = cosine_alphas_cumprod()
    betas = 1 - ac[1:] / ac[:-1]
    assert betas.max().item() == pytest.approx(0.999, abs=1e-9)  # the last β is clipped
    assert 1 - f_cos(1000) / f_cos(999) == pytest.approx(1.0)  # f(T) ≈ 0: unclipped, ᾱ_T would vanish
    assert torch.all(betas[:-1] < 0.999)  # only the last step is clipped
    assert ac[-1].item() == pytest.approx(ac[-2].item() * 0.001, rel=1e-9)


def test_buffers_are_float32_and_follow_the_module():
    diff = GaussianDiffusion()
    assert diff.sqrt_ac.dtype == diff.sqrt_1m_ac.dtype == diff.alphas_cumprod.dtype == torch.float32
    torch.testing.assert_close(diff.sqrt_ac.square() + diff.sqrt_1m_ac.square(), torch.ones(1000))
    meta = diff.to("meta")
    assert meta.sqrt_ac.device.type == "meta"
    x = torch.zeros(2, 1, 8, 8, device="meta")
    assert meta.q_sample(x, torch.zeros(2, dtype=torch.long, device="meta"), x).device.type == "meta"


def test_model_range_round_trip():
    x = torch.tensor([0.0, 0.25, 1.0, 1.5])
    assert torch.equal(to_model_range(x), torch.tensor([-1.0, -0.5, 1.0, 2.0]))
    assert torch.equal(from_model_range(to_model_range(x)), x)  # exact in binary floating point here


def test_q_sample_arithmetic_per_sample():
    diff = GaussianDiffusion()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 4, 5, generator=gen) * 2 - 1
    noise = torch.randn(3, 1, 4, 5, generator=gen)
    t = torch.tensor([0, 499, 999])
    ac = cosine_alphas_cumprod().float()
    out = diff.q_sample(x0, t, noise)
    for i in range(3):
        expected = ac[t[i]].sqrt() * x0[i] + (1 - ac[t[i]]).sqrt() * noise[i]
        torch.testing.assert_close(out[i], expected)
    # a shared [1, 1, H, W] noise field broadcasts over the batch
    torch.testing.assert_close(diff.q_sample(x0, t, noise[:1]), diff.q_sample(x0, t, noise[:1].expand(3, -1, -1, -1)))


def test_sample_timesteps_uniform_and_deterministic():
    diff = GaussianDiffusion()
    t = diff.sample_timesteps(20000, torch.Generator().manual_seed(1), "cpu")
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= 999
    assert t.min() == 0 and t.max() == 999  # both ends reachable
    assert abs(t.float().mean().item() - 499.5) < 10  # mean of U{0..999} (sd of the mean ≈ 2)
    again = diff.sample_timesteps(20000, torch.Generator().manual_seed(1), "cpu")
    assert torch.equal(t, again)


def test_fixed_timesteps_checks_range():
    diff = GaussianDiffusion()
    assert torch.equal(diff.fixed_timesteps(3, 499, "cpu"), torch.full((3,), 499))
    with pytest.raises(ValueError, match="t_fix=1000"):
        diff.fixed_timesteps(3, 1000, "cpu")
