"""Diffusion methods (ddpm, pddpm, mddpm-*): loss composition, L_p gradients, grid reconstruction, presets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mddpm.config import build_method, resolve_config
from mddpm.diffusion.noise import make_noise
from mddpm.diffusion.schedule import cosine_alphas_cumprod, from_model_range, to_model_range
from mddpm.errors import MddpmError
from mddpm.methods import get_method
from mddpm.methods.diffusion import DiffusionAnomalyMethod

DIFFUSION_METHODS = ["ddpm", "pddpm", "mddpm-ipm", "mddpm-fpm", "mddpm-fpmcm", "mddpm-released"]
TINY_NET = {"model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "head_channels": 8, "groups": 4}
SIZE = 32


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny(name: str, seed: int = 0, **changes) -> DiffusionAnomalyMethod:
    """The registered method ``name`` with a tiny net (16-px grid boxes on 32x32 slices), weights from ``seed``."""
    model = dict(get_method(name).presets["paper"]["model"])
    model["net"] = dict(model["net"], **TINY_NET)
    if model["patch_size"] is not None:
        model["patch_size"] = SIZE // 2
    model.update(changes)
    torch.manual_seed(seed)
    method = DiffusionAnomalyMethod(**model)
    with torch.no_grad():  # leave the zero initialisation so that outputs depend on inputs
        g = gen(seed + 100)
        for p in method.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return method


def brain_batch(batch: int = 4, seed: int = 0) -> dict:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    fg = ((yy / 0.8) ** 2 + (xx / 0.9) ** 2 < 1).float()[None, None].repeat(batch, 1, 1, 1)
    return {"image": fg * torch.rand(fg.shape, generator=gen(seed)), "mask": fg}


class Scale(nn.Module):
    """Stub net: prediction = input × a per-pixel weight (ones), recording its inputs."""

    def __init__(self, size: int = SIZE):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, 1, size, size))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return x * self.weight


class Constant(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.value)


def pinned_box(batch: int = 2) -> torch.Tensor:
    box = torch.zeros(batch, 1, SIZE, SIZE, dtype=torch.bool)
    box[0, :, :16, :16] = True
    box[1, :, 16:, :16] = True
    return box


# ---- every registered variant ----------------------------------------------------------------------

@pytest.mark.parametrize("name", DIFFUSION_METHODS)
def test_training_loss_is_finite_and_backpropagates(name):
    method = tiny(name)
    loss = method.training_loss(brain_batch(), gen(1), 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", DIFFUSION_METHODS)
def test_cuda_training_step_has_no_host_sync(name):
    method = tiny(name).cuda()
    batch = {k: v.cuda() for k, v in brain_batch().items()}
    g = torch.Generator(device="cuda").manual_seed(1)
    method.training_loss(batch, g, 0).backward()  # first call: kernels load, cached noise terms built
    torch.cuda.set_sync_debug_mode("error")
    try:
        method.training_loss(batch, g, 1).backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("name", DIFFUSION_METHODS)
def test_reconstruct_shape_range_and_determinism(name):
    method = tiny(name)
    volume = brain_batch(5)
    a = method.reconstruct(volume["image"], volume["mask"], gen(2))
    b = method.reconstruct(volume["image"], volume["mask"], gen(2))
    c = method.reconstruct(volume["image"], volume["mask"], gen(3))
    assert a.shape == volume["image"].shape and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", DIFFUSION_METHODS)
def test_training_loss_is_deterministic_by_generator(name):
    method = tiny(name)
    batch = brain_batch()
    a = method.training_loss(batch, gen(4))
    assert torch.equal(a, method.training_loss(batch, gen(4)))
    assert not torch.equal(a, method.training_loss(batch, gen(5)))


def test_presets_follow_the_published_runs():
    for name in DIFFUSION_METHODS:
        paper = resolve_config(name, "paper")
        assert paper["train"]["batch_size"] == 32 and paper["train"]["lr"] == 1e-4
        assert paper["train"]["max_steps"] == (115_200 if name.startswith("mddpm") else 19_200)
        assert paper["model"]["t_fix"] == 499 and paper["model"]["noise"] == "simplex"
        assert paper["model"]["noise_shared"] is True and paper["data"]["grid"] == "paper"
        # the small-grid options are off in the faithful preset
        assert paper["model"]["simplex_frequency"] == 64 and paper["model"]["train_t_band"] is None
        assert paper["model"]["train_noise_shared"] is None and paper["model"]["val_at_t_fix"] is False
        demo = resolve_config(name, "demo")
        assert demo["data"]["grid"] == "demo"
        assert demo["model"]["patch_size"] == (None if name == "ddpm" else 24)
        assert demo["model"]["simplex_frequency"] == 32 and demo["model"]["train_t_band"] == [399, 599]
        assert demo["model"]["train_noise_shared"] is False and demo["model"]["val_at_t_fix"] is True
    ddpm, pddpm = resolve_config("ddpm", "paper")["model"], resolve_config("pddpm", "paper")["model"]
    assert ddpm["patch_size"] is None and ddpm["net"]["scale_shift_norm"] is False
    assert pddpm["patch_size"] == 48 and pddpm["loss_in_patch"] and pddpm["net"]["scale_shift_norm"]
    assert pddpm["masking"] == "none"
    assert resolve_config("mddpm-released", "paper")["model"]["masking"] == "released"
    built = build_method(resolve_config("mddpm-fpm", "demo", ["model.spectral=random-patches"]))
    assert built.spectral == "random-patches" and built.masking == "fpm"


def test_every_learned_demo_row_shares_the_tuning_rule():
    """The demo rule (benchmarks/results/budget_curve.md): lr 1e-3 and 1,600 optimiser steps for every row."""
    for name in DIFFUSION_METHODS + ["vae", "svae", "dae", "fanogan"]:
        demo = resolve_config(name, "demo")["train"]
        assert demo["lr"] == 1e-3 and demo["max_steps"] == 1600, name
        assert get_method(name).presets["demo"]["about"]


def test_bad_settings_are_one_line_errors():
    with pytest.raises(MddpmError, match="model.masking"):
        tiny("pddpm", masking="cutout")
    with pytest.raises(MddpmError, match="model.t_fix"):
        tiny("pddpm", t_fix=1000)
    method = tiny("pddpm", patch_size=12)
    with pytest.raises(MddpmError, match="patch_size=12 does not divide"):
        method.training_loss(brain_batch(), gen())


# ---- faithfulness: masking "none" is pDDPM, validation has no masking --------------------------------

def test_mddpm_without_masking_equals_pddpm_bit_for_bit():
    pddpm = tiny("pddpm", seed=7)
    mddpm = tiny("mddpm-fpmcm", seed=7, masking="none")
    for (name, p), q in zip(pddpm.state_dict().items(), mddpm.state_dict().values()):
        assert torch.equal(p, q), name
    batch = brain_batch()
    assert torch.equal(pddpm.training_loss(batch, gen(8)), mddpm.training_loss(batch, gen(8)))
    assert torch.equal(pddpm.reconstruct(batch["image"], batch["mask"], gen(9)),
                      mddpm.reconstruct(batch["image"], batch["mask"], gen(9)))


@pytest.mark.parametrize("name", ["mddpm-ipm", "mddpm-released"])
def test_validation_loss_skips_the_masking(name):
    method = tiny(name)
    batch = brain_batch(8)
    val = method.validation_loss(batch, gen(10))
    assert not torch.equal(val, method.training_loss(batch, gen(10)))
    method.masking = "none"
    assert torch.equal(val, method.training_loss(batch, gen(10)))


# ---- the loss composition (p_losses) on pinned boxes ------------------------------------------------

def test_network_input_is_noised_inside_the_box_and_clean_outside():
    method = tiny("pddpm")
    method.net = Scale()
    batch = brain_batch(2)
    augmented = batch["image"] * 0.5
    t = torch.tensor([499, 10])
    noise = torch.randn(2, 1, SIZE, SIZE, generator=gen(11))
    box = pinned_box()
    method.loss_from(batch["image"], augmented, box, t, noise)
    seen = method.net.inputs[0]
    x0 = to_model_range(augmented)
    assert torch.equal(seen[~box], x0[~box])
    assert torch.allclose(seen[box], method.diffusion.q_sample(x0, t, noise)[box])


def test_lp_gradients_come_only_from_the_box():
    method = tiny("pddpm")
    method.net = Scale()
    with torch.no_grad():
        method.net.weight.fill_(1.5)  # so that the prediction differs from the target outside the box too
    batch = brain_batch(2)
    box = pinned_box()
    loss = method.loss_from(batch["image"], batch["image"], box, torch.tensor([300, 300]),
                            torch.randn(2, 1, SIZE, SIZE, generator=gen(12)))
    loss.backward()
    grad = method.net.weight.grad[0, 0]
    union = box.any(0)[0]  # pixels inside either sample's box
    assert torch.all(grad[~union] == 0)
    assert (grad[union] != 0).float().mean() > 0.9
    method.loss_in_patch = False
    method.net.weight.grad = None
    method.loss_from(batch["image"], batch["image"], box, torch.tensor([300, 300]),
                     torch.randn(2, 1, SIZE, SIZE, generator=gen(12))).backward()
    assert (method.net.weight.grad[0, 0][~union] != 0).any()


def test_lp_loss_is_box_l1_scaled_by_box_area_plus_the_augmentation_term():
    method = tiny("pddpm")
    method.net = Constant(0.3)
    batch = brain_batch(2)
    box = pinned_box()
    clean = batch["image"]
    t, noise = torch.tensor([5, 900]), torch.zeros(2, 1, SIZE, SIZE)
    loss = method.loss_from(clean, clean, box, t, noise)
    box_l1 = (0.3 - to_model_range(clean))[box].abs().mean()
    assert torch.allclose(loss, box_l1 * 0.25)
    augmented = clean.flip(-1)
    with_aug = method.loss_from(clean, augmented, box, t, noise)
    outside = (to_model_range(augmented) - to_model_range(clean))[~box].abs().sum() / clean.numel()
    assert torch.allclose(with_aug, box_l1 * 0.25 + outside)


def test_ddpm_noises_and_predicts_the_whole_slice():
    method = tiny("ddpm")
    assert method.box_masks(SIZE, SIZE, "cpu").shape == (1, 1, SIZE, SIZE)
    method.net = Constant(0.3)
    clean = brain_batch(2)["image"]
    loss = method.training_loss({"image": clean, "mask": clean > 0}, gen(13))
    assert torch.allclose(loss, (0.3 - to_model_range(clean)).abs().mean())


# ---- grid reconstruction ----------------------------------------------------------------------------

def test_grid_boxes_tile_the_slice():
    boxes = tiny("pddpm").box_masks(SIZE, SIZE, "cpu")
    assert boxes.shape == (4, 1, SIZE, SIZE)
    assert torch.equal(boxes.sum(0), torch.ones(1, SIZE, SIZE, dtype=torch.long))
    assert boxes[1, 0, :16, 16:].all() and boxes[2, 0, 16:, :16].all()


def test_every_pixel_is_predicted_once_from_the_pass_that_noised_it():
    """An identity net returns its input: each pixel of x̂ must be the noised value, i.e. it comes from
    the forward pass in which its own box was noised (in the other passes it is clean)."""
    method = tiny("pddpm")
    method.net = Scale()
    volume = brain_batch(3)
    recon = method.reconstruct(volume["image"], volume["mask"], gen(14))
    inputs = torch.cat(method.net.inputs)
    assert inputs.shape[0] == 3 * 4
    x0 = to_model_range(volume["image"])
    noise = make_noise("simplex", 3, SIZE, SIZE, gen(14), "cpu", shared=True)
    noised = method.diffusion.q_sample(x0, torch.full((3,), 499), noise)
    assert torch.allclose(recon, from_model_range(noised), atol=1e-6)
    assert not torch.allclose(recon, volume["image"], atol=1e-2)
    method.net = Constant(0.2)
    assert torch.allclose(method.reconstruct(volume["image"], volume["mask"], gen(14)), torch.tensor(0.6))


def test_chunking_does_not_change_the_reconstruction():
    method = tiny("mddpm-released")
    volume = brain_batch(5)
    whole = method.reconstruct(volume["image"], volume["mask"], gen(15))
    method.chunk_size = 3
    assert torch.allclose(method.reconstruct(volume["image"], volume["mask"], gen(15)), whole, atol=1e-5)


@pytest.mark.parametrize("shared", [True, False])
def test_reconstruction_noise_is_shared_across_the_volume_when_faithful(shared):
    method = tiny("pddpm", noise_shared=shared)
    method.net = Scale()
    same_slices = torch.zeros(3, 1, SIZE, SIZE)
    recon = method.reconstruct(same_slices, same_slices, gen(16))
    assert torch.equal(recon[0], recon[1]) == shared


def test_reconstruct_follows_the_input_device_and_keeps_no_graph():
    method = tiny("pddpm")
    volume = brain_batch(2)
    recon = method.reconstruct(volume["image"], volume["mask"], gen(17))
    assert recon.device == volume["image"].device and not recon.requires_grad


# ---- options for small grids and budgets (named, off in the paper preset) ---------------------------

class RecordT(nn.Module):
    """Stub net that records the timesteps and inputs it sees and predicts its input."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.t: list[torch.Tensor] = []
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.t.append(t.clone())
        self.inputs.append(x.detach().clone())
        return x * self.weight


def test_training_t_band_and_validation_at_t_fix():
    method = tiny("pddpm", train_t_band=[399, 599], val_at_t_fix=True)
    method.net = RecordT()
    for seed in range(20):
        method.training_loss(brain_batch(8), gen(seed))
    t = torch.cat(method.net.t)
    assert 399 <= t.min() and t.max() <= 599 and len(t.unique()) > 50
    method.net.t.clear()
    method.validation_loss(brain_batch(8), gen(0))
    assert torch.equal(method.net.t[0], torch.full((8,), 499))
    published = tiny("pddpm")
    published.net = RecordT()
    for seed in range(5):
        published.training_loss(brain_batch(8), gen(seed))
        published.validation_loss(brain_batch(8), gen(seed))
    assert torch.cat(published.net.t).max() > 600 and torch.cat(published.net.t).min() < 399
    with pytest.raises(MddpmError, match="train_t_band"):
        tiny("pddpm", train_t_band=[600, 500])


def test_per_sample_training_noise_keeps_inference_noise_shared():
    method = tiny("ddpm", train_noise_shared=False, noise="gaussian")
    method.net = RecordT()
    batch = {"image": torch.zeros(4, 1, SIZE, SIZE), "mask": torch.ones(4, 1, SIZE, SIZE)}
    method.training_loss(batch, gen(0))
    train_inputs = method.net.inputs[-1]  # noise only (the image is zero), one field per sample
    assert not torch.allclose(train_inputs[0] / train_inputs[0].std(), train_inputs[1] / train_inputs[1].std())
    method.reconstruct(batch["image"], batch["mask"], gen(0))
    test_inputs = method.net.inputs[-1]  # same t for every slice: one shared field
    assert torch.equal(test_inputs[0], test_inputs[1])
    assert tiny("ddpm").train_noise_shared is True and tiny("ddpm", noise_shared=False).train_noise_shared is False


def test_simplex_frequency_sets_the_lattice_scale():
    a = make_noise("simplex", 1, SIZE, SIZE, gen(0), "cpu", frequency=64)
    b = make_noise("simplex", 1, SIZE, SIZE, gen(0), "cpu", frequency=16)
    # a finer lattice decorrelates neighbours faster
    def neighbour_corr(x):
        return torch.corrcoef(torch.stack([x[..., :, :-1].flatten(), x[..., :, 1:].flatten()]))[0, 1]
    assert neighbour_corr(b) < neighbour_corr(a)
    method = tiny("ddpm", simplex_frequency=16)
    assert torch.equal(method._noise(1, SIZE, SIZE, gen(0), torch.device("cpu"), True), b)
    with pytest.raises(MddpmError, match="simplex_frequency"):
        tiny("ddpm", simplex_frequency=0)


class Identity(nn.Module):
    """A fake x0-predictor that returns its (noised) input and records the timesteps."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.t = t
        return x


def test_one_step_reconstruction_arithmetic():
    """The reconstruction that runs (DDPM: the whole slice noised to t_fix, x0 predicted in one call)."""
    method = DiffusionAnomalyMethod(net=TINY_NET, patch_size=None, noise="gaussian", t_fix=499)
    method.net = Identity()
    x = torch.rand(2, 1, 6, 6, generator=gen(1))
    x_hat = method.reconstruct(x, torch.ones_like(x), gen(0))
    noise = make_noise("gaussian", 2, 6, 6, gen(0), "cpu", shared=True)
    a = cosine_alphas_cumprod().float()[499]
    expected = from_model_range(a.sqrt() * to_model_range(x) + (1 - a).sqrt() * noise)
    torch.testing.assert_close(x_hat, expected, rtol=0, atol=1e-6)
    assert torch.equal(method.net.t, torch.tensor([499, 499]))
    assert x_hat.max() > 1 or x_hat.min() < 0  # not clipped to [0, 1], as published


def test_each_method_declares_its_inference_settings():
    method = DiffusionAnomalyMethod(net=TINY_NET, chunk_size=5, t_fix=300, timesteps=1000)
    assert method.inference_settings() == {"noise_shared": True, "chunk_size": 5, "t_fix": 300}
    method.set_inference(noise_shared=False, chunk_size=7, t_fix=10)
    assert (method.noise_shared, method.chunk_size, method.t_fix) == (False, 7, 10)
    with pytest.raises(MddpmError, match=r"--t-fix 1000: outside \[0, 999\]"):
        method.set_inference(t_fix=1000)
    with pytest.raises(MddpmError, match="has no inference setting timesteps"):
        method.set_inference(timesteps=10)
    vae = build_method(resolve_config("vae", "demo"))
    assert vae.inference_settings() == {} and vae.lr_scale(3) == 1.0 and vae.map_is_residual
    assert vae.optimizer_options() == [{}] * len(vae.param_groups())
    with pytest.raises(MddpmError, match=r"VAEMethod has no inference setting chunk_size \(its settings: none\)"):
        vae.set_inference(chunk_size=4)
