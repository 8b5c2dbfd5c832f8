"""Speed harness (``mddpm bench``): time every stage of the pipeline on the device at hand.

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
import math
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mddpm import __version__
from mddpm.config import build_method, resolve_config
from mddpm.diffusion.noise import make_noise, simplex_noise_2d
from mddpm.diffusion.schedule import to_model_range
from mddpm.evaluation.metrics import PooledScores, RankedScores, auroc, average_precision
from mddpm.evaluation.postprocess import (erode_mask_axial, median_filter_3d, published_erosion_iterations,
                                          remove_small_components)
from mddpm.evaluation.threshold import bisect, bisection_search, exact_search
from mddpm.inference.predict import resolve_device, score_volume
from mddpm.masking import apply_masking
from mddpm.nets.unet import unet_flops

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) of GPUs we know, matched by name.
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0}
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


# ---- machine --------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def bf16_peak_tflops(device: torch.device) -> float | None:
    """The dense bf16 peak of a known GPU (TFLOP/s), else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def machine_info(device: torch.device) -> dict:
    """CPU model, cores, threads, load average, torch version, device name and git commit."""
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_average_start": list(os.getloadavg()),
        "torch": torch.__version__, "mddpm": __version__, "python": platform.python_version(),
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "bf16_peak_tflops": bf16_peak_tflops(device), "git_commit": _git_commit(),
    }


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

def _build(method: str, preset: str, settings: BenchSettings, device: torch.device):
    cfg = resolve_config(method, preset, list(settings.overrides))
    return build_method(cfg).to(device), cfg


def _grid_size(cfg: dict) -> int:
    return 96 if cfg["data"]["grid"] == "paper" else 48


def bench_train(preset: str, settings: BenchSettings, device: torch.device) -> dict:
    """Training step of the bare net and of the masked methods, fp32 and bf16, for one preset."""
    method, cfg = _build(TRAIN_METHODS[0], preset, settings, device)
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
    methods = {name: method if name == TRAIN_METHODS[0] else _build(name, preset, settings, device)[0]
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

            results["steps"][f"{name}/{precision}"] = entry(time_call(full, device, repeats, settings.warmup), precision)
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
    method, cfg = _build(TRAIN_METHODS[0], preset, settings, device)
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
           "forwards_per_volume": depth * boxes, "gflop_per_volume": unet_flops(method.net, size, size) * depth * boxes / 1e9,
           "precisions": {}}
    for precision in ("32", "bf16"):
        timed = time_call(lambda: score_volume(method, image, mask, gen, precision=precision), device, repeats,
                          settings.warmup)
        per_volume = timed["median_s"] * depth / slices  # scaled when only some slices were timed
        out["precisions"][precision] = {**timed, "seconds_per_volume": per_volume, "volumes_per_s": 1 / per_volume,
                                        "tflops": out["gflop_per_volume"] / per_volume / 1e3}
    return out


def _published_erosion(mask: np.ndarray, iterations: int) -> np.ndarray:
    from scipy import ndimage

    cross = ndimage.generate_binary_structure(2, 1)
    return np.stack([ndimage.binary_erosion(s, cross, iterations=iterations) for s in mask > 0])


def _published_components(binary: np.ndarray, max_size: int = 7) -> np.ndarray:
    from skimage import measure

    labels = measure.label(binary, connectivity=3)
    keep = binary.copy()
    for region in measure.regionprops(labels):
        if region.area_filled <= max_size:
            keep[labels == region.label] = False
    return keep


def bench_postprocess(settings: BenchSettings, device: torch.device) -> dict:
    """Per-volume post-processing and metrics (ours vs reference implementations) on one volume."""
    from scipy import ndimage
    from sklearn.metrics import average_precision_score, roc_auc_score

    gen = torch.Generator(device=device).manual_seed(settings.seed)
    maps, masks, labels = synthetic_maps(1, settings.volume_shape, gen, device)
    score, mask, label = maps[0], masks[0], labels[0]
    iterations = published_erosion_iterations(score.shape[-1])
    masked = score * erode_mask_axial(mask, iterations)
    filtered = median_filter_3d(masked)
    binary = filtered > torch.quantile(filtered[filtered > 0].float(), 0.9)
    r, w = settings.repeats, settings.warmup
    masked_np, filtered_np = masked.cpu().numpy(), filtered.cpu().numpy()
    label_np, binary_np = label.cpu().numpy().ravel() > 0, binary.cpu().numpy()

    def ranked_metrics():
        ranked = RankedScores.from_scores(filtered, label)
        return average_precision(ranked), auroc(ranked)

    rows = {
        "erosion": (time_call(lambda: erode_mask_axial(mask, iterations), device, r, w),
                    time_call(lambda: _published_erosion(mask.cpu().numpy(), iterations), device, r, w), None),
        "median_5cube": (time_call(lambda: median_filter_3d(masked), device, r, w),
                         time_call(lambda: ndimage.median_filter(masked_np, size=5, mode="reflect"), device, r, w),
                         PUBLISHED_SECONDS["median_5cube"]),
        "connected_components": (time_call(lambda: remove_small_components(binary), device, r, w),
                                 time_call(lambda: _published_components(binary_np), device, r, w),
                                 PUBLISHED_SECONDS["connected_components"]),
        "ap_and_auroc": (time_call(ranked_metrics, device, r, w),
                         time_call(lambda: (average_precision_score(label_np, filtered_np.ravel()),
                                            roc_auc_score(label_np, filtered_np.ravel())), device, r, w),
                         PUBLISHED_SECONDS["average_precision"]),
    }
    ap_ours, auc_ours = ranked_metrics()
    out = {"volume": list(settings.volume_shape), "brain_fraction": float(mask.mean()), "stages": {},
           "check": {"ap": ap_ours, "ap_sklearn": float(average_precision_score(label_np, filtered_np.ravel())),
                     "auroc": auc_ours, "auroc_sklearn": float(roc_auc_score(label_np, filtered_np.ravel())),
                     "median_equal_scipy": bool(np.array_equal(filtered_np,
                                                               ndimage.median_filter(masked_np, size=5, mode="reflect")))}}
    for name, (ours, ref, published) in rows.items():
        out["stages"][name] = {"ours_s": ours["median_s"], "reference_s": ref["median_s"],
                               "speedup_vs_reference": ref["median_s"] / ours["median_s"], "published_s": published,
                               "repeats": ours["repeats"]}
    out["total_ours_s"] = sum(v["ours_s"] for v in out["stages"].values())
    out["total_reference_s"] = sum(v["reference_s"] for v in out["stages"].values())
    return out


def _numpy_bisection(scores: np.ndarray, gt: np.ndarray) -> float:
    """Reference: the bisection as the published code runs it, a Dice pass over the whole pooled array per candidate."""
    n_gt = int(gt.sum())

    def pooled_dice(t: float) -> float:
        pred = scores > t
        den = int(pred.sum()) + n_gt
        return 2 * int((pred & gt).sum()) / den if den else math.nan

    return bisect(pooled_dice, float(scores.max()))[0]


def bench_threshold(settings: BenchSettings, device: torch.device) -> dict:
    """Threshold search over ``pooled_volumes`` maps: pooling (as evaluate does while streaming),
    bisection, ranking + exact search; the NumPy bisection reference on the same maps."""
    gen = torch.Generator(device=device).manual_seed(settings.seed)
    n = settings.pooled_volumes
    parts = [synthetic_maps(min(10, n - i), settings.volume_shape, gen, device) for i in range(0, n, 10)]
    maps = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[2] for p in parts])
    del parts
    r = max(1, settings.repeats // 2)
    holder: dict = {}

    def pool():
        holder["pool"] = PooledScores.pool([PooledScores.from_scores(m, g) for m, g in zip(maps, labels)])

    def rank():
        holder["ranked"] = RankedScores.pool([RankedScores.from_scores(m, g) for m, g in zip(maps, labels)])

    pooling = time_call(pool, device, r, settings.warmup)
    bisection = time_call(lambda: bisection_search(holder["pool"]), device, r, settings.warmup)
    ranking = time_call(rank, device, r, settings.warmup)
    exact = time_call(lambda: exact_search(holder["ranked"]), device, r, settings.warmup)
    maps_np, gt_np = maps.cpu().numpy(), labels.cpu().numpy() > 0
    reference = time_call(lambda: _numpy_bisection(maps_np, gt_np), device, r, settings.warmup)
    ours_t, ref_t = bisection_search(holder["pool"]).threshold, _numpy_bisection(maps_np, gt_np)
    bisection_total = pooling["median_s"] + bisection["median_s"]
    return {"volumes": n, "voxels": maps.numel(), "voxels_above_minimum": holder["pool"].values.numel(),
            "pooling_s": pooling["median_s"], "bisection_s": bisection["median_s"],
            "ranking_s": ranking["median_s"], "exact_s": exact["median_s"],
            "bisection_total_s": bisection_total, "exact_total_s": ranking["median_s"] + exact["median_s"],
            "reference_bisection_s": reference["median_s"], "published_bisection_s": PUBLISHED_SECONDS["bisection_100_volumes"],
            "speedup_vs_reference": reference["median_s"] / bisection_total,
            "speedup_vs_published": PUBLISHED_SECONDS["bisection_100_volumes"] / bisection_total,
            "same_threshold_as_reference": ours_t == ref_t, "repeats": r}


def _parity_inputs(settings: BenchSettings, device: torch.device):
    """(method, {set name: list of (image, mask, label) [S, 1, H, W]}, description).

    With ``--run``: every volume of each lesion test split (``<set>_test``; ``test`` when there is
    none) of ``--data``; without: ``parity_volumes`` synthetic volumes and a random demo model."""
    if settings.run is not None:
        from mddpm.data.dataset import load_dataset
        from mddpm.data.cache import load_prepared
        from mddpm.data.prepare import get_grid, prepare_dataset
        from mddpm.training.checkpoint import build_from_weights

        if settings.data is None:
            from mddpm.errors import MddpmError

            raise MddpmError("--run needs --data (the dataset whose test volumes are scored)")
        method, payload = build_from_weights(Path(settings.run) / "best.pt")
        method = method.to(device)
        dataset = load_dataset(settings.data)
        splits = sorted(name for name in dataset.splits if name.endswith("_test")) or ["test"]
        prepared = load_prepared(prepare_dataset(settings.data, get_grid(payload["config"]["data"]["grid"]),
                                                 progress=False))
        sets = {split: [tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[:, None].to(device)
                              for a in prepared.volume(case.id)) for case in dataset.split(split)]
                for split in splits}
        counts = ", ".join(f"{len(v)} of {k}" for k, v in sets.items())
        return method, sets, f"trained run {settings.run}, every volume of the test splits of {settings.data} ({counts})"
    method, cfg = _build(TRAIN_METHODS[0], "demo", settings, device)
    method.eval()
    gen = torch.Generator(device=device).manual_seed(settings.seed + 1)
    with torch.no_grad():  # the zero-initialised layers would make every prediction constant: no parity test
        for p in method.parameters():
            if not p.any():
                p.normal_(0.0, 0.05, generator=gen)
    v = synthetic_volumes(settings.parity_volumes, (25, 48, 48), gen, device)
    vols = [(v["image"][i][:, None], v["mask"][i][:, None], v["label"][i][:, None]) for i in range(v["image"].shape[0])]
    return method, {"synthetic": vols}, (
        f"randomly initialised demo mddpm-released model (no trained run given; zero-initialised layers redrawn from "
        f"N(0, 0.05²)), {len(vols)} synthetic 25x48x48 volumes")


def bench_bf16_parity(settings: BenchSettings, device: torch.device) -> dict:
    """Per test set: max / mean |map_bf16 − map_fp32| inside the brain and the change of the
    pooled AUPRC (all the set's voxels ranked together)."""
    method, sets, description = _parity_inputs(settings, device)
    out = {"source": description, "sets": {}}
    for name, vols in sets.items():
        maps: dict[str, list[torch.Tensor]] = {"32": [], "bf16": []}
        max_diff, sum_diff, count = 0.0, 0.0, 0
        for i, (image, mask, _) in enumerate(vols):
            for precision in maps:
                gen = torch.Generator(device=device).manual_seed(settings.seed + i)
                amap, _ = score_volume(method, image, mask, gen, precision=precision)
                maps[precision].append(amap.float() * (mask > 0))
            d = (maps["bf16"][-1] - maps["32"][-1]).abs()[mask > 0]
            max_diff, sum_diff, count = max(max_diff, d.max().item()), sum_diff + d.sum().item(), count + d.numel()
        gt = torch.cat([label for _, _, label in vols])
        ap = {p: average_precision(RankedScores.from_scores(torch.cat(m), gt)) for p, m in maps.items()}
        out["sets"][name] = {"volumes": len(vols), "max_abs_diff": max_diff, "mean_abs_diff": sum_diff / count,
                             "auprc_fp32": ap["32"], "auprc_bf16": ap["bf16"], "auprc_change": ap["bf16"] - ap["32"]}
    return out


# ---- driver ---------------------------------------------------------------------------------------

def run_bench(settings: BenchSettings, stages: tuple[str, ...] | None = None,
              say: Callable[[str], None] = print) -> dict:
    """Run the stages (all by default) and return the results dict (machine, settings, stages)."""
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    stages = stages or ("noise_masking", "train", "predict", "postprocess", "threshold", "bf16_parity")
    results = {"machine": machine_info(device), "settings": asdict(settings), "stages": {}}
    for stage in stages:
        say(f"bench: {stage} (load average {os.getloadavg()[0]:.1f})")
        start = time.perf_counter()
        if stage in ("train", "predict"):
            fn = bench_train if stage == "train" else bench_predict
            value = {p: fn(p, settings, device) for p in settings.presets}
        else:
            value = {"noise_masking": bench_noise_masking, "postprocess": bench_postprocess,
                     "threshold": bench_threshold, "bf16_parity": bench_bf16_parity}[stage](settings, device)
        value = {"wall_s": time.perf_counter() - start, "load_average_1min": os.getloadavg()[0], "result": value}
        results["stages"][stage] = value
    results["machine"]["load_average_end"] = list(os.getloadavg())
    return results


def _f(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:.0f}"
        return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{digits}f}".rstrip("0").rstrip(".")
    return str(x)


def _ms(s) -> str:
    return "–" if s is None else f"{1000 * s:.1f} ms" if s < 1 else f"{s:.2f} s"


def to_markdown(results: dict, command: str | None = None) -> str:
    """A Markdown report of ``run_bench`` results (machine, command, one table per stage)."""
    m, st = results["machine"], results["stages"]
    lines = ["# mddpm speed", "",
             f"- device: {m['device']} ({m['device_name']}); CPU {m['cpu']}, {m['cores']} cores, "
             f"torch threads {m['torch_threads']}, OMP_NUM_THREADS={m['omp_num_threads']}",
             f"- torch {m['torch']}, mddpm {m['mddpm']}, git {m['git_commit']}",
             f"- load average (1/5/15 min) at start {', '.join(f'{x:.1f}' for x in m['load_average_start'])}, "
             f"at end {', '.join(f'{x:.1f}' for x in m.get('load_average_end', []))}"]
    if command:
        lines.append(f"- command: `{command}`")
    lines.append("- every time is the median of the repeats after warm-up")
    if "train" in st:
        lines += ["", "## Training step", "",
                  "| preset | batch | step | precision | time | slices/s | TFLOP/s | vs bare net | % bf16 peak |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for preset, r in st["train"]["result"].items():
            for key, v in r["steps"].items():
                name = key.split("/")[0]
                over = v.get("overhead_vs_bare")
                lines.append(f"| {preset} ({r['size']}², {r['gflop_per_step']:.0f} GFLOP/step) | {r['batch']} | {name} | "
                             f"{v['precision']} | {_ms(v['median_s'])} | {_f(v['slices_per_s'])} | {v['tflops']:.4f} | "
                             f"{'–' if over is None else f'{100 * over:+.1f} %'} | {_f(v.get('percent_of_bf16_peak'))} |")
            if "compile" in r:
                c = r["compile"]
                text = c["error"] if "error" in c else (f"first call {c['first_call_s']:.1f} s, then "
                                                        f"{_ms(c['median_s'])} per step (eager fp32 "
                                                        f"{_ms(r['steps']['mddpm-released/32']['median_s'])})")
                lines.append(f"\ntorch.compile ({preset}, mddpm-released, fp32): {text}")
    if "noise_masking" in st:
        r = st["noise_masking"]["result"]
        lines += ["", f"## Noise and masking ({r['size']}×{r['size']}, batch {r['batch']})", "",
                  "| operation | time | published code | speed-up |", "|---|---|---|---|"]
        for name, v in r["timings"].items():
            lines.append(f"| {name} | {_ms(v['median_s'])} | {_ms(v.get('published_s'))} | "
                         f"{_f(v.get('speedup_vs_published'))} |")
    if "predict" in st:
        lines += ["", "## Predict (mddpm-released, all boxes × slices batched)", "",
                  "| preset | volume | boxes | slices timed | precision | s/volume | volumes/s | TFLOP/s |",
                  "|---|---|---|---|---|---|---|---|"]
        for preset, r in st["predict"]["result"].items():
            for p, v in r["precisions"].items():
                lines.append(f"| {preset} | {'×'.join(map(str, r['volume']))} | {r['boxes']} | {r['slices_timed']} | "
                             f"{p} | {_f(v['seconds_per_volume'])} | {_f(v['volumes_per_s'])} | {v['tflops']:.4f} |")
        lines.append("\nWhen fewer slices than the volume's are timed, s/volume is scaled by slices/timed slices.")
    if "postprocess" in st:
        r = st["postprocess"]["result"]
        lines += ["", f"## Post-processing and metrics per volume ({'×'.join(map(str, r['volume']))}, "
                  f"brain {100 * r['brain_fraction']:.0f} %)", "",
                  "| stage | ours | reference implementation (same run) | speed-up | published code |",
                  "|---|---|---|---|---|"]
        for name, v in r["stages"].items():
            lines.append(f"| {name} | {_ms(v['ours_s'])} | {_ms(v['reference_s'])} | {_f(v['speedup_vs_reference'])}× | "
                         f"{_ms(v['published_s'])} |")
        lines.append(f"| total | {_ms(r['total_ours_s'])} | {_ms(r['total_reference_s'])} | "
                     f"{_f(r['total_reference_s'] / r['total_ours_s'])}× | |")
        c = r["check"]
        lines.append(f"\nReferences: erosion = scipy binary_erosion per slice; median = scipy median_filter; "
                     f"CC = skimage label + regionprops filled_area (published); AP/AUROC = sklearn. "
                     f"Checks: median identical to scipy: {c['median_equal_scipy']}; AP {c['ap']:.6f} "
                     f"(sklearn {c['ap_sklearn']:.6f}); AUROC {c['auroc']:.6f} (sklearn {c['auroc_sklearn']:.6f}).")
    if "threshold" in st:
        r = st["threshold"]["result"]
        lines += ["", f"## Threshold search ({r['volumes']} pooled volumes, {r['voxels'] / 1e6:.1f} M voxels, "
                  f"{r['voxels_above_minimum'] / 1e6:.1f} M above the minimum)", "",
                  "| step | time |", "|---|---|",
                  f"| pool every volume's voxels above its minimum (unsorted) | {_ms(r['pooling_s'])} |",
                  f"| bisection (10 steps, 20 counting passes) on the pool | {_ms(r['bisection_s'])} |",
                  f"| **bisection total** | {_ms(r['bisection_total_s'])} |",
                  f"| rank every volume + merge (for the exact rule) | {_ms(r['ranking_s'])} |",
                  f"| exact search on the ranking | {_ms(r['exact_s'])} |",
                  f"| **exact total** | {_ms(r['exact_total_s'])} |",
                  f"| reference: NumPy pass over all voxels per candidate (same run) | {_ms(r['reference_bisection_s'])} |",
                  f"| published code | {_ms(r['published_bisection_s'])} |",
                  "", f"Speed-up of the bisection: {_f(r['speedup_vs_reference'])}× vs the same-run reference, "
                  f"{_f(r['speedup_vs_published'])}× vs the published code; same threshold as the reference: "
                  f"{r['same_threshold_as_reference']}."]
    if "bf16_parity" in st:
        r = st["bf16_parity"]["result"]
        lines += ["", "## bf16 vs fp32 anomaly maps", "", f"Source: {r['source']}. Differences inside the brain; "
                  "AUPRC of all the set's voxels ranked together.", "",
                  "| set | volumes | max abs diff | mean abs diff | AUPRC fp32 | AUPRC bf16 | change |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {v['volumes']} | {v['max_abs_diff']:.2e} | {v['mean_abs_diff']:.2e} | {v['auprc_fp32']:.4f} | "
                  f"{v['auprc_bf16']:.4f} | {v['auprc_change']:+.2e} |" for name, v in r["sets"].items()]
    lines += ["", "Stage wall times: " + ", ".join(f"{k} {v['wall_s']:.0f} s (load {v['load_average_1min']:.1f})"
                                               for k, v in st.items()), ""]
    return "\n".join(lines)
