"""The Table-1 baselines (vae, svae, dae, fanogan) and the intensity reference: losses on hand-checked
cases, training signal, reconstruction shapes, registry and presets. Tiny nets on 16×16 / 32×32 slices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mddpm.config import build_method, resolve_config
from mddpm.errors import MddpmError
from mddpm.methods import all_methods
from mddpm.methods.dae import DAEMethod, coarse_noise, corrupt
from mddpm.methods.fanogan import CRITIC, ENCODER, GENERATOR, FAnoGANMethod, gradient_penalty
from mddpm.methods.intensity import IntensityMethod
from mddpm.methods.svae import SVAEMethod
from mddpm.methods.vae import VAEMethod, kl_divergence, reconstruction_error
from mddpm.nets.autoencoders import PlainUNet, WSConv2d, middle_divisor

BASELINES = ["vae", "svae", "dae", "fanogan", "intensity"]

TINY = {
    "vae": lambda: VAEMethod(image_size=16, latent_dim=8, num_down=2, base_channels=8, max_channels=16,
                             bottleneck_reduction=4),
    "svae": lambda: SVAEMethod(image_size=16, latent_dim=8, num_down=2, base_channels=8, max_channels=16,
                               bottleneck_reduction=4, d_model=16, num_heads=2, num_layers=1, ff_dim=32),
    "dae": lambda: DAEMethod(depth=2, base_channels=8, noise_res=4, cosine_steps=0),
    "fanogan": lambda: FAnoGANMethod(image_size=16, latent_dim=8, num_stages=2, base_channels=8, max_channels=16,
                                     encoder_base_channels=8, encoder_max_channels=16, gan_steps=12),
}


def brain_batch(shape, seed=0):
    """Random intensities inside a centred disc ("brain"), 0 outside; returns (image, mask)."""
    g = torch.Generator().manual_seed(seed)
    h, w = shape[-2:]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    mask = ((yy**2 + xx**2) < 0.6).float().expand(shape).contiguous()
    return (0.3 + 0.7 * torch.rand(shape, generator=g)) * mask, mask


def adam_losses(method, batch, steps, step_of=lambda i: 0, lr=1e-3, seed=1):
    """Losses before and after ``steps`` Adam steps; the same noise every step (generator reseeded)."""
    step0 = step_of(0)
    params = method.param_groups()[method.optimizer_index(step0)]
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for i in range(steps + 1):
        loss = method.training_loss(batch, torch.Generator().manual_seed(seed), step_of(i))
        losses.append(loss.item())
        if i < steps:
            opt.zero_grad()
            loss.backward()
            opt.step()
    return losses


# --- hand-checked loss terms ------------------------------------------------------------------------


def test_kl_divergence_of_known_gaussians():
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    kl = kl_divergence(mu, logvar)
    # 0.5·(1 + 1 − 0 − 1) + 0.5·(0 + 2 − ln 2 − 1) = 1 − ln(2)/2; the standard normal has KL 0
    assert kl.tolist() == pytest.approx([1 - math.log(2) / 2, 0.0])


def test_reconstruction_error_sums_over_pixels():
    x = torch.zeros(2, 1, 4, 4)
    x_hat = x.clone()
    x_hat[0, 0, :2, :2] = 0.5
    assert reconstruction_error(x, x_hat, "l1").tolist() == pytest.approx([2.0, 0.0])
    assert reconstruction_error(x, x_hat, "l2").tolist() == pytest.approx([1.0, 0.0])


def test_gradient_penalty_of_linear_critic_is_analytic():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 1, 8, 8, generator=g)
    real, fake = torch.rand(5, 1, 8, 8, generator=g), torch.rand(5, 1, 8, 8, generator=g)
    gp = gradient_penalty(lambda v: (v * w).flatten(1).sum(1) + 3.0, real, fake, g)
    # ∇_x <w, x> = w everywhere, so the penalty is (‖w‖ − 1)² whatever the interpolation point
    assert gp.item() == pytest.approx((w.norm().item() - 1.0) ** 2, rel=1e-5)
    unit = w / w.norm()
    assert gradient_penalty(lambda v: (v * unit).flatten(1).sum(1), real, fake, g).item() == pytest.approx(0, abs=1e-9)


def test_coarse_noise_has_coarse_std_and_low_frequency_spectrum():
    res, size, std = 8, 48, 0.2
    noise = coarse_noise((64, 1, size, size), res, std, torch.Generator().manual_seed(0))
    # bilinear (align_corners) interpolation of i.i.d. N(0, σ²): variance σ²·mean_i((1−t_i)² + t_i²) per axis
    t = np.arange(size) * (res - 1) / (size - 1)
    t -= np.floor(t)
    expected_std = std * ((1 - t) ** 2 + t**2).mean()
    assert noise.std().item() == pytest.approx(expected_std, rel=0.05)
    # spectrum: almost all energy within the coarse grid's Nyquist (res/2 cycles per image); white noise ~96 % beyond
    freq = torch.fft.fftfreq(size).abs() * size
    beyond = (freq[:, None] > res / 2) | (freq[None, :] > res / 2)
    power = (torch.fft.fft2(noise[:, 0]).abs() ** 2).mean(0)
    white = (torch.fft.fft2(torch.randn(64, size, size)).abs() ** 2).mean(0)
    assert (power[beyond].sum() / power.sum()).item() < 0.15
    assert (white[beyond].sum() / white.sum()).item() > 0.9


def test_corrupt_adds_noise_on_the_foreground_only():
    x, mask = brain_batch((4, 1, 32, 32))
    noisy = corrupt(x, 8, 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(noisy[mask == 0], x[mask == 0])
    assert (noisy - x)[mask == 1].abs().mean() > 0.05


def test_coarse_noise_shift_depends_on_the_generator():
    a = coarse_noise((1, 1, 32, 32), 8, 0.2, torch.Generator().manual_seed(0))
    b = coarse_noise((1, 1, 32, 32), 8, 0.2, torch.Generator().manual_seed(0))
    c = coarse_noise((1, 1, 32, 32), 8, 0.2, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)


# --- nets -------------------------------------------------------------------------------------------


def test_weight_standardised_conv_ignores_filter_scale_and_offset():
    conv = WSConv2d(2, 3, 3)
    x = torch.randn(1, 2, 8, 8)
    before = conv(x)
    with torch.no_grad():
        conv.weight.mul_(5.0).add_(torch.randn(3, 1, 1, 1))
    assert torch.allclose(conv(x), before, rtol=1e-3, atol=1e-4)


def test_unet_keeps_shape_and_groups_follow_kascenas():
    assert (middle_divisor(64), middle_divisor(128), middle_divisor(512)) == (8, 16, 32)
    assert PlainUNet(1, 1, depth=3, base_channels=8)(torch.rand(2, 1, 32, 32)).shape == (2, 1, 32, 32)


# --- every method: loss, training signal, reconstruction --------------------------------------------


@pytest.mark.parametrize("name", ["vae", "dae"])
def test_slice_method_loss_is_finite_and_adam_reduces_it(name):
    torch.manual_seed(0)
    method = TINY[name]()
    x, mask = brain_batch((8, 1, 16, 16))
    losses = adam_losses(method, {"image": x, "mask": mask}, steps=15)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0]


def test_svae_loss_is_finite_and_adam_reduces_it():
    torch.manual_seed(0)
    method = TINY["svae"]()
    x, mask = brain_batch((2, 6, 16, 16))
    losses = adam_losses(method, {"image": x, "mask": mask}, steps=15)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0]


@pytest.mark.parametrize("stage_step", [0, 5, 12], ids=["critic", "generator", "encoder"])
def test_fanogan_each_stage_loss_decreases_under_its_optimiser(stage_step):
    torch.manual_seed(0)
    method = TINY["fanogan"]()
    x, mask = brain_batch((8, 1, 16, 16))
    losses = adam_losses(method, {"image": x, "mask": mask}, steps=10, step_of=lambda i: stage_step)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.02 * abs(losses[0])


def test_fanogan_schedule_alternates_critic_and_generator_then_trains_the_encoder():
    method = TINY["fanogan"]()  # n_critic 5, gan_steps 12
    stages = [method.optimizer_index(s) for s in range(15)]
    assert stages == [CRITIC] * 5 + [GENERATOR] + [CRITIC] * 5 + [GENERATOR] + [ENCODER] * 3
    groups = method.param_groups()
    ids = [{id(p) for p in group} for group in groups]
    assert len(groups) == 3 and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == {id(p) for p in method.parameters()}
    assert method.optimizer_options() == [{"betas": (0.0, 0.9)}] * 3


def test_fanogan_feature_score_adds_the_feature_residual_inside_the_brain():
    method = TINY["fanogan"]().eval()
    x, mask = brain_batch((3, 1, 16, 16))
    g = torch.Generator()
    with torch.no_grad():
        image_map = method.anomaly_map(x, mask, g)
        method.score = "image+feature"
        both = method.anomaly_map(x, mask, g)
        a_d = method.feature_residual(x)
    assert a_d.shape == (3,) and (a_d > 0).all()
    assert torch.allclose(both - image_map, method.kappa * a_d.view(-1, 1, 1, 1) * mask, atol=1e-6)


@pytest.mark.parametrize("name", ["vae", "svae", "dae", "fanogan"])
def test_reconstruct_returns_one_volume_of_slices_deterministically(name):
    method = TINY[name]().eval()
    x, mask = brain_batch((5, 1, 16, 16))
    with torch.no_grad():
        a = method.reconstruct(x, mask, torch.Generator().manual_seed(0))
        b = method.reconstruct(x, mask, torch.Generator().manual_seed(1))
        score = method.anomaly_map(x, mask, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and score.shape == x.shape
    assert torch.equal(a, b)  # no sampling at test time
    assert torch.allclose(score, (x - a).abs())


def test_svae_output_for_a_slice_depends_on_the_other_slices():
    torch.manual_seed(0)
    x, mask = brain_batch((6, 1, 16, 16))
    changed = x.clone()
    changed[4] = changed[4].flip(-1) * 0.5  # edit slice 4 only
    svae, vae = TINY["svae"]().eval(), TINY["vae"]().eval()
    g = torch.Generator()
    with torch.no_grad():
        mu_before, mu_after = svae.net.posterior(x[:, 0][None])[0][0], svae.net.posterior(changed[:, 0][None])[0][0]
        s_before, s_after = svae.reconstruct(x, mask, g), svae.reconstruct(changed, mask, g)
        v_before, v_after = vae.reconstruct(x, mask, g), vae.reconstruct(changed, mask, g)
    # slice 0's posterior (and so its reconstruction) sees slice 4 through the transformer
    shift = (mu_after - mu_before).norm(dim=1)
    assert shift[0] > 0.01 * shift[4] > 0
    assert not torch.equal(s_after[0], s_before[0])
    assert torch.equal(v_after[0], v_before[0])  # control: the slice VAE's slice 0 does not
    assert not torch.equal(v_after[4], v_before[4])


def test_svae_rejects_slice_batches():
    x, mask = brain_batch((4, 1, 16, 16))
    with pytest.raises(MddpmError, match="svae"):
        TINY["svae"]().training_loss({"image": x[:, 0, None, None, :, :], "mask": mask}, torch.Generator())


@pytest.mark.parametrize("name", ["vae", "svae", "fanogan"])
def test_wrong_slice_size_is_a_one_line_error(name):
    method = TINY[name]().eval()
    x, mask = brain_batch((5, 1, 32, 32))
    with pytest.raises(MddpmError, match="image_size is 16 but the slices are 32x32"):
        method.reconstruct(x, mask, torch.Generator())


def test_dae_schedule_and_optimiser_options():
    method = DAEMethod(depth=2, base_channels=8, cosine_steps=100)
    assert [method.lr_scale(s) for s in (0, 50, 100, 200)] == pytest.approx([1.0, 0.5, 0.0, 1.0])
    assert DAEMethod(depth=2, base_channels=8, cosine_steps=0).lr_scale(50) == 1.0
    assert method.optimizer_options() == [{"amsgrad": True, "weight_decay": 1e-5}]


def test_intensity_map_is_the_image_inside_the_brain_and_has_nothing_to_train():
    method = IntensityMethod()
    x, mask = brain_batch((3, 1, 16, 16))
    x = x + 0.2 * (1 - mask)  # something outside the brain that must not score
    assert torch.equal(method.anomaly_map(x, mask, torch.Generator()), x * mask)
    loss = method.training_loss({"image": x, "mask": mask}, torch.Generator())
    assert loss.dim() == 0 and loss.item() == 0 and not loss.requires_grad
    assert method.param_groups() == [] and not list(method.parameters())


# --- registry and presets ---------------------------------------------------------------------------


def test_registry_lists_the_baselines_with_descriptions():
    methods = all_methods()
    for name in BASELINES:
        assert name in methods
        assert methods[name].description and "\n" not in methods[name].description
        assert {"paper", "demo"} <= set(methods[name].presets)


@pytest.mark.parametrize("name", BASELINES)
def test_presets_resolve_and_build(name):
    for preset, grid, size, slices in (("paper", "paper", 96, 50), ("demo", "demo", 48, 25)):
        cfg = resolve_config(name, preset)
        assert cfg["data"]["grid"] == grid
        method = build_method(cfg).eval()
        if name == "intensity":
            assert cfg["train"]["max_steps"] == 0
        if preset == "demo" or name in ("vae", "intensity"):  # keep the test fast: big paper nets only built
            x, mask = brain_batch((slices, 1, size, size))
            with torch.no_grad():
                assert method.reconstruct(x, mask, torch.Generator()).shape == x.shape
    if name == "fanogan":
        cfg = resolve_config(name, "paper")
        assert cfg["train"]["max_steps"] > cfg["model"]["gan_steps"]


def test_overrides_reach_the_builder():
    cfg = resolve_config("vae", "demo", ["model.latent_dim=7", "model.recon_loss=l2"])
    method = build_method(cfg)
    assert method.net.mu.out_features == 7 and method.recon_loss == "l2"
    with pytest.raises(MddpmError, match="recon_loss"):
        build_method(resolve_config("vae", "demo", ["model.recon_loss=l3"]))
