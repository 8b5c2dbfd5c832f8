"""Speed harness: the stages it times (``benchmarks/speed.py`` runs them and writes the results).

Stages (each a median over ``repeats`` timed calls after ``warmup`` untimed ones; CUDA is
synchronised around every call):

- ``train``: one training step (``training_loss`` + backward) of ``mddpm-released`` and
  ``mddpm-fpmcm`` against the bare network step (forward + L1 + backward on the same batch), fp32
  and bf16 autocast, per preset; slices/s and achieved TFLOP/s = ``unet_flops`` × 3 × batch / time
  (and % of the bf16 dense peak on a known GPU);
- ``noise_masking``: one simplex field, a batch of independent fields, the released augmentation
  and FPM-CM on a batch of slices, beside the published code's figures;
- ``predict``: ``score_volume`` (all boxes of all slices in one batch) per volume, fp32 and bf16;
- ``postprocess``: erosion, 5³ median, connected components, AP and AUROC on one volume, each beside
  the same-machine reference implementation (scipy / scikit-image / scikit-learn) and the
  published figure;
- ``threshold``: ranking a pooled validation set and the bisection / exact searches, beside a
  NumPy pass-per-candidate bisection (the published algorithm) on the same pooled array;
- ``bf16_parity``: fp32 vs bf16 anomaly maps of the same volumes (a trained run, or a randomly
  initialised demo model).

All inputs are synthetic and generated from fixed seeds; nothing is read from disk unless a run
and a dataset are given for the parity check.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from flops import unet_flops
from machine import bf16_peak_tflops
from mddpm.config import build_method, resolve_config
from mddpm.diffusion.noise import make_noise, simplex_noise_2d
from mddpm.diffusion.schedule import to_model_range
from mddpm.inference.predict import score_volume
from mddpm.masking import apply_masking

# Figures of the published code on this project's CPU (seconds; protocol §9 measurements).
PUBLISHED_SECONDS = {"augmentation_batch32": 0.0135, "simplex_field": 0.0043, "median_5cube": 0.72,
                     "connected_components": 1.3, "average_precision": 0.18, "bisection_100_volumes": 1.8}
TRAIN_METHODS = ("mddpm-released", "mddpm-fpmcm")


@dataclass
class BenchSettings:
    """What to measure and at which sizes (the defaults are the full CPU run)."""

    device: str = "auto"
    threads: int | None = None  # torch.set_num_threads; None = leave as is
    presets: tuple[str, ...] = ("demo", "paper")
    batch: dict = field(default_factory=dict)  # preset -> training batch (default: the preset's)
    predict_slices: dict = field(default_factory=dict)  # preset -> slices per timed volume (default: all)
    repeats: int = 5
    paper_repeats: int = 2  # the paper net is slow on a CPU
    warmup: int = 1
    overrides: tuple[str, ...] = ()  # --set overrides applied to every built method
    noise_size: int = 96
    noise_batch: int = 32
    volume_shape: tuple[int, int, int] = (50, 96, 96)  # [Z, H, W] of the post-processing / threshold data
    pooled_volumes: int = 100
    parity_volumes: int = 4
    run: str | None = None  # trained run for the bf16 parity check
    data: str | None = None  # its dataset
    compile: bool = False  # also time the demo training step under torch.compile
    seed: int = 0


# ---- timing ---------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> dict:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed (device synchronised).

    Returns {"median_s", "min_s", "repeats"} in seconds.
    """
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times)}


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---- synthetic inputs -----------------------------------------------------------------------------

def synthetic_volumes(n: int, shape: tuple[int, int, int], generator: torch.Generator,
                      device: torch.device) -> dict[str, torch.Tensor]:
    """``n`` brain-like volumes [n, Z, H, W]: an ellipsoid brain mask (~30 % of the voxels), a smooth
    positive image in [0, 1] inside it, and one bright spherical lesion per volume (its label)."""
    z, h, w = shape
    gz, gh, gw = torch.meshgrid(*(torch.linspace(-1, 1, s, device=device) for s in shape), indexing="ij")
    brain = ((gz / 0.85) ** 2 + (gh / 0.8) ** 2 + (gw / 0.75) ** 2) <= 1
    base = 0.5 + 0.1 * torch.sin(3 * gh) * torch.cos(2 * gw) + 0.05 * torch.cos(4 * gz)
    centres = (torch.rand(n, 3, generator=generator, device=device) - 0.5) * 0.8
    radius = 0.15 + 0.15 * torch.rand(n, 1, 1, 1, generator=generator, device=device)
    dist2 = ((gz - centres[:, 0, None, None, None]) ** 2 + (gh - centres[:, 1, None, None, None]) ** 2
             + (gw - centres[:, 2, None, None, None]) ** 2)
    label = (dist2 <= radius ** 2) & brain
    noise = 0.05 * torch.rand(n, z, h, w, generator=generator, device=device)
    image = ((base + noise + 0.4 * label) * brain).clamp(0, 1)
    return {"image": image.float(), "mask": brain.expand(n, z, h, w).float(), "label": label.float()}


def synthetic_maps(n: int, shape: tuple[int, int, int], generator: torch.Generator,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Anomaly maps as ``mddpm predict`` writes them: (maps, brain masks, labels), each [n, Z, H, W];
    maps are |x − x̂|-like (0 outside the brain, small inside, higher in the lesion)."""
    vols = synthetic_volumes(n, shape, generator, device)
    err = 0.15 * torch.rand(vols["image"].shape, generator=generator, device=device) ** 2
    maps = (err + 0.3 * vols["label"] * torch.rand(vols["image"].shape, generator=generator, device=device))
    return maps * vols["mask"], vols["mask"], vols["label"]


def _slice_batch(batch: int, size: int, generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    vols = synthetic_volumes(1, (batch, size, size), generator, device)  # reuse the volume's axial slices
    return {"image": vols["image"][0, :, None].contiguous(), "mask": vols["mask"][0, :, None].contiguous()}


# ---- stages ---------------------------------------------------------------------------------------

def build_for_timing(method: str, preset: str, settings: BenchSettings, device: torch.device):
    cfg = resolve_config(method, preset, list(settings.overrides))
    return build_method(cfg).to(device), cfg


def _grid_size(cfg: dict) -> int:
    return 96 if cfg["data"]["grid"] == "paper" else 48


def bench_train(preset: str, settings: BenchSettings, device: torch.device) -> dict:
    """Training step of the bare net and of the masked methods, fp32 and bf16, for one preset."""
    method, cfg = build_for_timing(TRAIN_METHODS[0], preset, settings, device)
    size = _grid_size(cfg)
    batch = settings.batch.get(preset, cfg["train"]["batch_size"])
    repeats = settings.paper_repeats if preset == "paper" and device.type == "cpu" else settings.repeats
    gen = torch.Generator(device=device).manual_seed(settings.seed)
    data = _slice_batch(batch, size, gen, device)
    flops_step = 3 * unet_flops(method.net, size, size) * batch
    peak = bf16_peak_tflops(device)
    noise = make_noise("gaussian", batch, size, size, gen, device, shared=False)
    t = method.diffusion.sample_timesteps(batch, gen, device)
    x0 = to_model_range(data["image"])
    noised = method.diffusion.q_sample(x0, t, noise)

    def entry(seconds: dict, precision: str) -> dict:
        s = seconds["median_s"]
        out = {**seconds, "precision": precision, "slices_per_s": batch / s, "tflops": flops_step / s / 1e12}
        if peak is not None and precision == "bf16":
            out["percent_of_bf16_peak"] = 100 * out["tflops"] / peak
        return out

    results: dict = {"preset": preset, "batch": batch, "size": size, "gflop_per_step": flops_step / 1e9,
                     "net_parameters": sum(p.numel() for p in method.net.parameters()), "steps": {}}
    methods = {name: method if name == TRAIN_METHODS[0] else build_for_timing(name, preset, settings, device)[0]
               for name in TRAIN_METHODS}
    for precision in ("32", "bf16"):
        def bare():
            method.net.zero_grad(set_to_none=True)
            with _autocast(device, precision):
                loss = (method.net(noised, t) - x0).abs().mean()
            loss.backward()

        results["steps"][f"bare_net/{precision}"] = entry(time_call(bare, device, repeats, settings.warmup), precision)
        for name, m in methods.items():
            def full(m=m):
                m.zero_grad(set_to_none=True)
                with _autocast(device, precision):
                    loss = m.training_loss(data, gen)
                loss.backward()

            timing = time_call(full, device, repeats, settings.warmup)
            results["steps"][f"{name}/{precision}"] = entry(timing, precision)
        bare_s = results["steps"][f"bare_net/{precision}"]["median_s"]
        for name in TRAIN_METHODS:
            results["steps"][f"{name}/{precision}"]["overhead_vs_bare"] = (
                results["steps"][f"{name}/{precision}"]["median_s"] / bare_s - 1)
    if settings.compile and preset == "demo":
        results["compile"] = _bench_compile(method, data, gen, device, settings)
    return results


def _bench_compile(method, data: dict, gen: torch.Generator, device: torch.device, settings: BenchSettings) -> dict:
    """The fp32 training step of ``method`` with its net under ``torch.compile`` (first call = compile)."""
    eager_net = method.net
    try:
        method.net = torch.compile(eager_net)

        def full():
            method.zero_grad(set_to_none=True)
            method.training_loss(data, gen).backward()

        start = time.perf_counter()
        full()
        _sync(device)
        first = time.perf_counter() - start
        timed = time_call(full, device, settings.repeats, settings.warmup)
        return {"first_call_s": first, **timed}
    except Exception as e:  # a missing C++ toolchain is the usual reason; recorded, not fatal
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
    finally:
        method.net = eager_net


def bench_noise_masking(settings: BenchSettings, device: torch.device) -> dict:
    """Simplex noise and masking at ``noise_size``² with batch ``noise_batch``."""
    size, batch = settings.noise_size, settings.noise_batch
    gen = torch.Generator(device=device).manual_seed(settings.seed)
    data = _slice_batch(batch, size, gen, device)
    r = settings.repeats * 4
    out = {
        "simplex_one_field": time_call(lambda: simplex_noise_2d(size, size, gen, device), device, r, settings.warmup),
        "simplex_batch_independent": time_call(lambda: make_noise("simplex", batch, size, size, gen, device,
                                                                   shared=False), device, r, settings.warmup),
        "masking_released": time_call(lambda: apply_masking(data["image"], data["mask"], gen, "released"),
                                      device, r, settings.warmup),
        "masking_fpmcm": time_call(lambda: apply_masking(data["image"], data["mask"], gen, "fpmcm"),
                                   device, r, settings.warmup),
    }
    out["simplex_one_field"]["published_s"] = PUBLISHED_SECONDS["simplex_field"]
    out["masking_released"]["published_s"] = PUBLISHED_SECONDS["augmentation_batch32"]
    for v in out.values():
        if "published_s" in v:
            v["speedup_vs_published"] = v["published_s"] / v["median_s"]
    return {"size": size, "batch": batch, "timings": out}


def bench_predict(preset: str, settings: BenchSettings, device: torch.device) -> dict:
    """``score_volume`` of ``mddpm-released`` on one synthetic volume of the preset's grid, fp32 and bf16."""
    method, cfg = build_for_timing(TRAIN_METHODS[0], preset, settings, device)
    method.eval()
    size = _grid_size(cfg)
    depth = 50 if cfg["data"]["grid"] == "paper" else 25
    slices = min(settings.predict_slices.get(preset, depth), depth)
    gen = torch.Generator(device=device).manual_seed(settings.seed)
    vol = synthetic_volumes(1, (slices, size, size), gen, device)
    image, mask = vol["image"][0, :, None], vol["mask"][0, :, None]
    boxes = method.box_masks(size, size, device).shape[0]
    repeats = settings.paper_repeats if preset == "paper" and device.type == "cpu" else settings.repeats
    out = {"preset": preset, "volume": [depth, size, size], "slices_timed": slices, "boxes": boxes,
           "forwards_per_volume": depth * boxes,
           "gflop_per_volume": unet_flops(method.net, size, size) * depth * boxes / 1e9,
           "precisions": {}}
    for precision in ("32", "bf16"):
        timed = time_call(lambda: score_volume(method, image, mask, gen, precision=precision), device, repeats,
                          settings.warmup)
        per_volume = timed["median_s"] * depth / slices  # scaled when only some slices were timed
        out["precisions"][precision] = {**timed, "seconds_per_volume": per_volume, "volumes_per_s": 1 / per_volume,
                                        "tflops": out["gflop_per_volume"] / per_volume / 1e3}
    return out


