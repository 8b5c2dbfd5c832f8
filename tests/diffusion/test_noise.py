"""Gaussian and OpenSimplex fractal noise: exactness of the kernel, statistics, sharing, devices."""

from __future__ import annotations

import math

import pytest
import torch

from mddpm.diffusion.noise import (
    fractal_noise_2d,
    gaussian_noise,
    make_noise,
    opensimplex_2d,
    random_permutations,
    simplex_noise_2d,
)

STRETCH, SQUISH = (1 / math.sqrt(3) - 1) / 2, (math.sqrt(3) - 1) / 2
GRADS = (5, 2, 2, 5, -5, 2, -2, 5, 5, -2, 2, -5, -5, -2, -2, -5)


def lcg_permutation(seed: int) -> list[int]:
    """OpenSimplex's own seeded table (64-bit LCG driving a Fisher-Yates shuffle), as the published
    generator builds it; used here only to check the kernel against a published value."""
    def step(s: int) -> int:
        s = (s * 6364136223846793005 + 1442695040888963407) % 2**64
        return s - 2**64 if s >= 2**63 else s

    for _ in range(3):
        seed = step(seed)
    source, perm = list(range(256)), [0] * 256
    for i in range(255, -1, -1):
        seed = step(seed)
        r = (seed + 31) % (i + 1)
        perm[i], source[r] = source[r], source[i]
    return perm


def scalar_opensimplex(x: float, y: float, perm: list[int]) -> float:
    """Point-by-point OpenSimplex 2-D written straight from the algorithm, branch by branch."""
    def vertex(xv: int, yv: int, dx: float, dy: float) -> float:
        attn = 2 - dx * dx - dy * dy
        if attn <= 0:
            return 0.0
        i = perm[(perm[xv & 255] + yv) & 255] & 14
        return attn**4 * (GRADS[i] * dx + GRADS[i + 1] * dy)

    xs, ys = x + (x + y) * STRETCH, y + (x + y) * STRETCH
    xb, yb = math.floor(xs), math.floor(ys)
    xi, yi = xs - xb, ys - yb
    dx0, dy0 = x - xb - (xb + yb) * SQUISH, y - yb - (xb + yb) * SQUISH
    value = vertex(xb + 1, yb, dx0 - 1 - SQUISH, dy0 - SQUISH) + vertex(xb, yb + 1, dx0 - SQUISH, dy0 - 1 - SQUISH)
    if xi + yi <= 1:
        z = 1 - xi - yi
        if z > xi or z > yi:
            ext = (xb + 1, yb - 1, dx0 - 1, dy0 + 1) if xi > yi else (xb - 1, yb + 1, dx0 + 1, dy0 - 1)
        else:
            ext = (xb + 1, yb + 1, dx0 - 1 - 2 * SQUISH, dy0 - 1 - 2 * SQUISH)
        base = (xb, yb, dx0, dy0)
    else:
        z = 2 - xi - yi
        if z < xi or z < yi:
            ext = (xb + 2, yb, dx0 - 2 - 2 * SQUISH, dy0 - 2 * SQUISH) if xi > yi else \
                (xb, yb + 2, dx0 - 2 * SQUISH, dy0 - 2 - 2 * SQUISH)
        else:
            ext = (xb, yb, dx0, dy0)
        base = (xb + 1, yb + 1, dx0 - 1 - 2 * SQUISH, dy0 - 1 - 2 * SQUISH)
    return (value + vertex(*base) + vertex(*ext)) / 47


def test_kernel_reproduces_the_published_opensimplex_value():
    # lmas/opensimplex README: seed(1234); noise2(x=10, y=10) -> 0.580279369186297
    perm = torch.tensor([lcg_permutation(1234)])
    value = opensimplex_2d(torch.tensor([10.0], dtype=torch.float64), torch.tensor([10.0], dtype=torch.float64), perm)
    assert value.item() == pytest.approx(0.580279369186297, abs=1e-14)


def test_kernel_matches_scalar_reference_on_every_branch():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(400, generator=gen, dtype=torch.float64) * 40 - 5  # also negative coordinates
    y = torch.rand(400, generator=gen, dtype=torch.float64) * 40 - 5
    perms = random_permutations(2, gen, "cpu")
    got = opensimplex_2d(x, y, perms)
    for b in range(2):
        table = perms[b].tolist()
        expected = torch.tensor([scalar_opensimplex(xi, yi, table) for xi, yi in zip(x.tolist(), y.tolist())],
                                dtype=torch.float64)
        torch.testing.assert_close(got[b], expected, rtol=0, atol=1e-12)
    # the sample visits all six (triangle, closest-pair, x>y) cases
    xs, ys = x + (x + y) * STRETCH, y + (x + y) * STRETCH
    xi, yi = xs - xs.floor(), ys - ys.floor()
    lower = xi + yi <= 1
    near = torch.where(lower, ((1 - xi - yi) > xi) | ((1 - xi - yi) > yi), ((2 - xi - yi) < xi) | ((2 - xi - yi) < yi))
    cases = {(bool(a), bool(b), bool(c)) for a, b, c in zip(lower, near, xi > yi)}
    assert len(cases) == 8  # the x>y split only matters when "near", but all combinations occur


def test_fractal_sum_equals_octaves_of_the_kernel():
    perm = torch.tensor([lcg_permutation(7), lcg_permutation(8)])
    h, w = 12, 20
    rows = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w).reshape(-1)
    cols = torch.arange(w, dtype=torch.float64)[None, :].expand(h, w).reshape(-1)
    expected = sum(0.8**i * opensimplex_2d(cols / (64 / 2**i), rows / (64 / 2**i), perm) for i in range(6))
    got = fractal_noise_2d(perm, h, w)
    assert got.shape == (2, h, w) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected.reshape(2, h, w), rtol=0, atol=1e-6)
    # fewer octaves / other settings are honoured (and cached separately)
    one = fractal_noise_2d(perm, h, w, octaves=1, frequency=4)
    expected_one = opensimplex_2d(cols / 4, rows / 4, perm).reshape(2, h, w)
    torch.testing.assert_close(one.double(), expected_one, rtol=0, atol=1e-6)


def test_simplex_statistics_match_the_published_generator():
    fields = simplex_noise_2d(96, 96, torch.Generator().manual_seed(0), "cpu", batch=64)
    assert fields.shape == (64, 96, 96) and fields.dtype == torch.float32
    stds, means = fields.std(dim=(1, 2)), fields.mean(dim=(1, 2))
    # protocol.md §2.3: per-field std ≈ 0.53 (0.45–0.60), mean ≈ −0.08 ± 0.16, values ~[−1.9, 2.0]
    assert 0.49 < stds.mean() < 0.57
    assert 0.40 < stds.median() < 0.65 and ((stds > 0.45) & (stds < 0.60)).float().mean() > 0.6
    assert abs(means.mean()) < 0.1  # expectation 0; sd of the 64-field mean ≈ 0.026
    assert 0.1 < means.std() < 0.3
    assert fields.abs().max() < 3.0
    assert (fields.amax(dim=(1, 2)) > 1.0).float().mean() > 0.8  # unnormalised, large smooth blobs
    lag1 = (fields[:, :, 1:] * fields[:, :, :-1]).mean() / fields.square().mean()
    assert lag1 > 0.9  # spatially smooth (white noise would give ≈ 0)


def test_simplex_is_deterministic_by_generator():
    a = simplex_noise_2d(32, 48, torch.Generator().manual_seed(5), "cpu", batch=2)
    b = simplex_noise_2d(32, 48, torch.Generator().manual_seed(5), "cpu", batch=2)
    c = simplex_noise_2d(32, 48, torch.Generator().manual_seed(6), "cpu", batch=2)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # fresh table per field


@pytest.mark.parametrize("kind", ["simplex", "gaussian"])
def test_make_noise_shared_and_independent(kind):
    shared = make_noise(kind, 5, 16, 24, torch.Generator().manual_seed(1), "cpu", shared=True)
    assert shared.shape == (5, 1, 16, 24) and shared.dtype == torch.float32
    assert all(torch.equal(shared[0], shared[i]) for i in range(1, 5))
    shared[1] += 1  # a real tensor, not a broadcast view
    assert not torch.equal(shared[0], shared[1])
    independent = make_noise(kind, 5, 16, 24, torch.Generator().manual_seed(1), "cpu", shared=False)
    assert independent.shape == (5, 1, 16, 24)
    assert all(not torch.allclose(independent[0], independent[i]) for i in range(1, 5))


def test_make_noise_fp16_cast():
    raw = simplex_noise_2d(32, 32, torch.Generator().manual_seed(2), "cpu")[0]
    cast = make_noise("simplex", 2, 32, 32, torch.Generator().manual_seed(2), "cpu", shared=True)
    exact = make_noise("simplex", 2, 32, 32, torch.Generator().manual_seed(2), "cpu", shared=True, fp16_cast=False)
    assert torch.equal(exact[0, 0], raw)
    assert torch.equal(cast[0, 0], raw.half().float())  # values of the published .half()
    assert 0 < (cast - exact).abs().max() <= 2**-11 * raw.abs().max()
    gauss = make_noise("gaussian", 1, 8, 8, torch.Generator().manual_seed(2), "cpu")
    assert not torch.equal(gauss, gauss.half().float())  # Gaussian noise is not cast


def test_gaussian_noise_unit_variance_and_determinism():
    x = gaussian_noise((64, 1, 32, 32), torch.Generator().manual_seed(0), "cpu")
    assert x.shape == (64, 1, 32, 32) and x.dtype == torch.float32
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1) < 0.02  # 65536 draws
    assert torch.equal(x, gaussian_noise((64, 1, 32, 32), torch.Generator().manual_seed(0), "cpu"))
    assert gaussian_noise((2, 3), torch.Generator().manual_seed(0), "cpu", dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("kind", ["simplex", "gaussian"])
def test_noise_follows_the_device(kind):
    out = make_noise(kind, 3, 16, 16, torch.Generator(), "meta", shared=False)
    assert out.device.type == "meta" and out.shape == (3, 1, 16, 16)


def test_make_noise_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown noise kind 'perlin'"):
        make_noise("perlin", 1, 8, 8, torch.Generator(), "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_noise_matches_cpu_for_the_same_tables():
    perm = random_permutations(8, torch.Generator().manual_seed(0), "cpu")
    torch.testing.assert_close(fractal_noise_2d(perm.cuda(), 96, 96).cpu(), fractal_noise_2d(perm, 96, 96),
                               rtol=0, atol=1e-5)
    out = make_noise("simplex", 4, 96, 96, torch.Generator("cuda").manual_seed(0), "cuda", shared=False)
    assert out.is_cuda and out.shape == (4, 1, 96, 96)
