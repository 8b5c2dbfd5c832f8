"""Speed harness, scoring stages: post-processing and metrics per volume, the threshold search and the
bf16 parity of anomaly maps, each beside a same-machine reference implementation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from mddpm.evaluation.metrics import PooledScores, RankedScores, auroc, average_precision
from mddpm.evaluation.postprocess import (
    erode_mask_axial,
    median_filter_3d,
    published_erosion_iterations,
    remove_small_components,
)
from mddpm.evaluation.threshold import bisect, bisection_search, exact_search
from mddpm.inference.predict import score_volume
from speed_model import (
    PUBLISHED_SECONDS,
    TRAIN_METHODS,
    BenchSettings,
    build_for_timing,
    synthetic_maps,
    synthetic_volumes,
    time_call,
)


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
                     "median_equal_scipy": bool(np.array_equal(
                         filtered_np, ndimage.median_filter(masked_np, size=5, mode="reflect")))}}
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
            "reference_bisection_s": reference["median_s"],
            "published_bisection_s": PUBLISHED_SECONDS["bisection_100_volumes"],
            "speedup_vs_reference": reference["median_s"] / bisection_total,
            "speedup_vs_published": PUBLISHED_SECONDS["bisection_100_volumes"] / bisection_total,
            "same_threshold_as_reference": ours_t == ref_t, "repeats": r}


def _parity_inputs(settings: BenchSettings, device: torch.device):
    """(method, {set name: list of (image, mask, label) [S, 1, H, W]}, description).

    With ``--run``: every volume of each lesion test split (``<set>_test``; ``test`` when there is
    none) of ``--data``; without: ``parity_volumes`` synthetic volumes and a random demo model."""
    if settings.run is not None:
        from mddpm.data.cache import load_prepared
        from mddpm.data.dataset import load_dataset
        from mddpm.data.grids import get_grid
        from mddpm.data.prepare import prepare_dataset
        from mddpm.weights import build_from_weights

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
        source = f"trained run {settings.run}, every volume of the test splits of {settings.data} ({counts})"
        return method, sets, source
    method, cfg = build_for_timing(TRAIN_METHODS[0], "demo", settings, device)
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


