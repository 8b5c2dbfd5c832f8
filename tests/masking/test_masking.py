"""Masking: each paper equation on pinned masks, the samplers' statistics, determinism, batch independence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mddpm.masking import (
    MASKINGS,
    apply_masking,
    centre_square_mask,
    fpm,
    fpm_cm,
    ipm,
    patch_mask_for_fraction,
    released_augmentation,
    released_patch_mask,
    sample_patch_mask,
    sample_spectral_mask,
)

DEVICES = ["cpu"] + [pytest.param("cuda", marks=pytest.mark.gpu)] if torch.cuda.is_available() else ["cpu"]


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def ellipse(batch: int, size: int = 96, a: float = 0.75, b: float = 0.6, device: str = "cpu") -> torch.Tensor:
    """Brain-like ellipse masks [B, 1, size, size] (rows = H semi-axis a, cols = W semi-axis b)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    fg = ((yy / a) ** 2 + (xx / b) ** 2 < 1).float()
    return fg[None, None].repeat(batch, 1, 1, 1).to(device)


def brain_slices(batch: int, size: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    fg = ellipse(batch, size)
    x = fg * torch.rand(fg.shape, generator=gen(seed))
    return x, fg


# ---- Eq. 7: FPM ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 1, 16, 16), (2, 1, 15, 12)])
def test_fpm_all_ones_is_identity(shape):
    x = torch.rand(shape, generator=gen())
    assert torch.allclose(fpm(x, torch.ones(shape[0], 1, *shape[2:])), x, atol=1e-6)


@pytest.mark.parametrize("shape", [(16, 16), (15, 12)])
def test_fpm_matches_numpy_shifted_spectrum(shape):
    """Eq. 7 with the mask in fftshifted layout, checked against a float64 numpy evaluation."""
    x = torch.rand(2, 1, *shape, generator=gen(1))
    keep = (torch.rand(2, 1, *shape, generator=gen(2)) < 0.5).float()
    spectrum = np.fft.fftshift(np.fft.fft2(x.double().numpy()), axes=(-2, -1))
    expected = np.real(np.fft.ifft2(np.fft.ifftshift(keep.double().numpy() * spectrum, axes=(-2, -1))))
    np.testing.assert_allclose(fpm(x, keep).numpy(), expected, atol=2e-6)


@pytest.mark.parametrize("shape", [(16, 16), (15, 13)])
def test_dc_sits_at_the_centre(shape):
    """Keeping only the coefficient at (H//2, W//2) leaves the image mean everywhere."""
    x = torch.rand(1, 1, *shape, generator=gen(3))
    keep = torch.zeros(1, 1, *shape)
    keep[..., shape[0] // 2, shape[1] // 2] = 1
    assert torch.allclose(fpm(x, keep), x.mean().expand_as(x), atol=1e-6)


def test_centre_square_mask_pinned():
    keep = centre_square_mask(torch.tensor([2, 3]), torch.tensor([True, False]), 8, 10)
    low = torch.zeros(8, 10)
    low[2:6, 3:7] = 1  # rows [4-2, 4+2-1], cols [5-2, 5+2-1]
    high = torch.ones(8, 10)
    high[1:7, 2:8] = 0  # v = 3, removed
    assert torch.equal(keep[0, 0], low)
    assert torch.equal(keep[1, 0], high)


def test_centre_square_sampler_covers_its_range():
    keep = sample_spectral_mask(600, 96, 96, gen(4))
    kept = keep.sum((1, 2, 3))
    low_pass = kept < 96 * 96 / 2
    side = torch.where(low_pass, kept, 96 * 96 - kept).sqrt()
    assert torch.equal(side, side.round())
    assert set((side / 2).long().tolist()) == set(range(2, 11))
    assert 0.4 < low_pass.float().mean() < 0.6


def test_random_spectral_patches_remove_a_fraction_in_range():
    keep = sample_spectral_mask(300, 32, 32, gen(5), kind="random-patches", ratio=(0.2, 0.6))
    removed = 1 - keep.mean((1, 2, 3))
    assert removed.min() > 0.2 - 0.02 and removed.max() < 0.6 + 0.02
    assert removed.min() < 0.25 and removed.max() > 0.55


def test_unknown_spectral_mask_is_an_error():
    with pytest.raises(ValueError, match="spectral"):
        sample_spectral_mask(1, 8, 8, gen(), kind="ring")


# ---- Eqs. 6 and 8 on pinned masks ---------------------------------------------------------------

def pinned_mask() -> torch.Tensor:
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[0, 0, 1:4, 2:6] = True
    mask[1, 0, 5:8, 0:2] = True
    return mask


def test_ipm_zeroes_exactly_the_mask():
    x = torch.rand(2, 1, 8, 8, generator=gen()) + 0.5
    mask = pinned_mask()
    out = ipm(x, mask)
    assert torch.all(out[mask] == 0)
    assert torch.equal(out[~mask], x[~mask])


def test_fpm_cm_pastes_inside_and_keeps_outside():
    x = torch.rand(2, 1, 8, 8, generator=gen(1))
    x_freq = torch.rand(2, 1, 8, 8, generator=gen(2)) - 1
    mask = pinned_mask()
    out = fpm_cm(x, x_freq, mask)
    assert torch.equal(out[mask], x_freq[mask])
    assert torch.equal(out[~mask], x[~mask])


# ---- the paper's patch sampler ------------------------------------------------------------------

def test_patch_mask_stays_in_foreground_and_hits_targets():
    fg = ellipse(200)
    target = torch.linspace(0.0, 1.0, 200)
    mask = patch_mask_for_fraction(fg, target, gen(6))
    assert not (mask & (fg == 0)).any()
    achieved = mask.sum((1, 2, 3)) / fg.sum((1, 2, 3))
    assert (achieved - target).abs().max() < 0.03


def test_patch_mask_fraction_lies_in_the_drawn_range_and_covers_it():
    fg = ellipse(400, 64, a=0.8, b=0.5)
    mask = sample_patch_mask(fg, gen(7), ratio=(0.1, 0.9))
    fraction = mask.sum((1, 2, 3)) / fg.sum((1, 2, 3))
    assert fraction.min() > 0.1 - 0.03 and fraction.max() < 0.9 + 0.03
    assert fraction.min() < 0.14 and fraction.max() > 0.86
    assert abs(fraction.mean().item() - 0.5) < 0.05


def test_patch_mask_is_made_of_rectangles_in_the_brain_box():
    """A patch is a grid cell of the brain's bounding box; the mask is the cell union cut to the brain."""
    fg = torch.zeros(1, 1, 20, 20)
    fg[..., 4:12, 6:18] = 1  # a rectangular brain: 8 rows, 12 cols, cells of 2x3 at cells=4
    mask = patch_mask_for_fraction(fg, torch.tensor([0.5]), gen(8), cells=4)[0, 0]
    assert mask.sum() == 48  # exactly 8 of the 16 cells
    cells = mask[4:12, 6:18].reshape(4, 2, 4, 3)
    per_cell = cells.sum((1, 3))
    assert set(per_cell.unique().tolist()) == {0, 6}


def test_empty_foreground_gives_an_empty_mask():
    fg = torch.zeros(2, 1, 16, 16)
    fg[1, :, 4:10, 4:10] = 1
    mask = sample_patch_mask(fg, gen(9))
    assert not mask[0].any() and mask[1].any()


def test_bad_ratio_is_an_error():
    with pytest.raises(ValueError, match="ratio"):
        sample_patch_mask(ellipse(1, 16), gen(), ratio=(0.5, 0.2))


# ---- the released code's augmentation -----------------------------------------------------------

def test_released_masked_fraction_matches_the_reference_statistics():
    """Protocol §4.1, simulated on ellipses: mean ≈ 4 %, 95th pct ≈ 9 %, ≈ 17 % without patches."""
    fg = ellipse(600, 96, a=0.73, b=0.88)  # 70 x 84 px: a central 96x96 slice at 2 mm
    mask, applied = released_patch_mask(fg, gen(10))
    fraction = ((mask & (fg > 0)).sum((1, 2, 3)) / fg.sum((1, 2, 3))).numpy()
    assert 0.03 < fraction.mean() < 0.055
    assert 0.07 < np.percentile(fraction, 95) < 0.11
    assert fraction.max() < 0.2
    assert 0.12 < 1 - applied.float().mean() < 0.22
    assert np.all(fraction[~applied.numpy()] == 0)


def test_released_patches_have_the_reference_sizes_and_margins():
    """R = 70 brain rows -> max_len = floor(7 · 1.8) = 12, min_len = 6; corners ≥ first + 5."""
    fg = torch.zeros(400, 1, 96, 96)
    fg[..., 10:80, 20:90] = 1  # rows 10..79 (R = 70), cols 20..89
    mask, _ = released_patch_mask(fg, gen(11))
    m = mask[:, 0]
    rows, cols = m.any(-1), m.any(-2)
    used = rows.any(-1)
    first_r = rows.float().argmax(-1)[used]
    last_r = 95 - rows.flip(-1).float().argmax(-1)[used]
    first_c = cols.float().argmax(-1)[used]
    last_c = 95 - cols.flip(-1).float().argmax(-1)[used]
    assert first_r.min() >= 15 and last_r.max() <= 79 - 6
    assert first_c.min() >= 25 and last_c.max() <= 89 - 6
    height, width = last_r - first_r + 1, last_c - first_c + 1
    solid = m[used].sum((1, 2)) == height * width  # samples whose union is one rectangle
    assert solid.sum() > 50
    sides = torch.cat([height[solid], width[solid]])
    assert sides.min() == 6 and sides.max() == 12


def test_released_leaves_unplaceable_samples_unchanged():
    """No brain, or a brain too small for the placement range (R = 12), would crash the released loop."""
    x = torch.rand(3, 1, 48, 48, generator=gen(12))
    fg = torch.zeros(3, 1, 48, 48)
    fg[1, :, 10:22, 10:40] = 1  # R = 12: last − 10 − 2 < first
    fg[2, :, 10:24, 10:40] = 1  # R = 14: placeable
    for seed in range(20):
        out = released_augmentation(x, fg, gen(seed))
        assert torch.equal(out[0], x[0]) and torch.equal(out[1], x[1])
    _, applied = released_patch_mask(fg.repeat(20, 1, 1, 1), gen(13))
    assert not applied.view(20, 3)[:, :2].any() and applied.view(20, 3)[:, 2].any()


def test_released_output_is_the_brain_masked_cutmix():
    x, fg = brain_slices(64, 96)
    x = x + 0.1  # nonzero outside the brain, to see the mask multiply
    out = released_augmentation(x, fg, gen(14))
    replay = gen(14)
    keep = sample_spectral_mask(64, 96, 96, replay)
    mask, applied = released_patch_mask(fg, replay)
    x_freq = fpm(x, keep)
    a = applied[:, None, None, None]
    inside = mask & (fg > 0) & a
    assert torch.allclose(out[inside], x_freq[inside])
    assert torch.equal(out[a.expand_as(x) & (fg == 0)], torch.zeros_like(out[a.expand_as(x) & (fg == 0)]))
    outside = ~mask & (fg > 0)
    assert torch.equal(out[outside], x[outside])
    assert torch.equal(out[~a.expand_as(x)], x[~a.expand_as(x)])
    assert applied.any() and (~applied).any()


# ---- the masking block: determinism, batch independence, device ----------------------------------

@pytest.mark.parametrize("kind", MASKINGS)
def test_masking_is_deterministic_by_generator(kind):
    x, fg = brain_slices(6, 32)
    a = apply_masking(x, fg, gen(20), kind)
    b = apply_masking(x, fg, gen(20), kind)
    assert torch.equal(a, b)
    if kind != "none":
        c = torch.stack([apply_masking(x, fg, gen(s), kind) for s in range(21, 25)])
        assert not all(torch.equal(a, ci) for ci in c)


@pytest.mark.parametrize("kind", MASKINGS)
def test_masking_is_batch_independent(kind):
    """Sample 0's result does not depend on the contents of the other samples."""
    x, fg = brain_slices(4, 48)
    other_x, other_fg = x.clone(), fg.clone()
    other_x[1:] = torch.rand(3, 1, 48, 48, generator=gen(30))
    other_fg[1:] = ellipse(3, 48, a=0.5, b=0.9)
    a = apply_masking(x, fg, gen(31), kind)
    b = apply_masking(other_x, other_fg, gen(31), kind)
    assert torch.equal(a[0], b[0])


@pytest.mark.parametrize("kind", ["ipm", "fpm", "fpmcm"])
def test_paper_maskings_leave_the_background_at_zero(kind):
    x, fg = brain_slices(8, 32)
    out = apply_masking(x, fg, gen(40), kind, spectral="random-patches")
    assert torch.all(out[fg == 0] == 0)
    assert not torch.equal(out, x)


def test_ipm_block_zeroes_the_sampled_patches():
    x, fg = brain_slices(8, 32)
    mask = sample_patch_mask(fg, gen(41))
    ipm_out = apply_masking(x, fg, gen(41), "ipm")
    assert torch.equal(ipm_out[~mask], x[~mask]) and torch.all(ipm_out[mask] == 0)


def test_unknown_masking_is_an_error():
    x, fg = brain_slices(1, 16)
    with pytest.raises(ValueError, match="masking"):
        apply_masking(x, fg, gen(), "cutout")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", MASKINGS)
def test_masking_follows_the_input_device(kind, device):
    x, fg = brain_slices(2, 32)
    out = apply_masking(x.to(device), fg.to(device), gen(50, device), kind)
    assert out.device.type == device and out.shape == x.shape and out.dtype == x.dtype
