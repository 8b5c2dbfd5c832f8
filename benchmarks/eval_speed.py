"""Evaluation speed: the released mDDPM code's functions against mddpm's, side by side.

One command (a few minutes on a quiet 2-core machine; it prints the time it took):

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/eval_speed.py --released /path/to/mDDPM

``--released`` is a checkout of https://github.com/hasan1292/mDDPM: its ``src/utils/utils_eval.py`` is
imported at run time (modules it imports but the timed functions never use, such as wandb, monai and
torchvision, are replaced by empty stand-ins when absent); nothing of it is copied here. Writes
``--out`` .md and .json (default ``benchmarks/results/eval_speed``) with the command, the machine, the
commit and the load average.

Inputs are synthetic, seeded, on the paper grid (96×96×50, a brain-shaped mask over about half the
volume, lesion blobs): "dense" maps are non-zero over the whole brain (as real anomaly maps are),
"sparse" ones keep only the brightest tenth of it. Every stage runs released and ours interleaved,
``--repeats`` times; the tables give medians. End to end, ``mddpm evaluate`` (a subprocess, as a
user runs it) and the released functions doing the same work (load the maps, mask + erode, 5³
median, AUROC, AUPRC, per-volume best Dice, threshold from the pooled validation maps, component
filter, counts) run on 10+10 and 40+40 volumes; the marginal cost per volume is the difference
divided by the 60 extra volumes, so that start-up cancels.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from machine import REPO, machine_info, markdown_header, write_results
from mddpm.evaluation.metrics import PooledScores, RankedScores, average_precision
from mddpm.evaluation.postprocess import cpu_threads, erode_mask_axial, remove_small_components
from mddpm.evaluation.threshold import bisection_search, exact_search
from mddpm.io import write_json, write_nifti
from mddpm.kernels.median import median_filter_3d
from mddpm.parallel import usable_threads

SHAPE = (50, 96, 96)  # Z, H, W: the paper grid
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def import_released(checkout: Path) -> types.ModuleType:
    """``src/utils/utils_eval.py`` of a released checkout, with stand-ins for unused absent imports."""
    path = checkout / "src" / "utils" / "utils_eval.py"
    if not path.is_file():
        sys.exit(f"{path}: not found (--released must be a checkout of github.com/hasan1292/mDDPM)")
    for name in ("wandb", "monai", "torchvision", "torchvision.transforms"):
        try:
            __import__(name)
        except ImportError:
            stand_in = types.ModuleType(name)
            stand_in.ToTensor = stand_in.ToPILImage = None
            sys.modules[name] = stand_in
    sys.path.insert(0, str(checkout))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from src.utils import utils_eval
    return utils_eval


def brain_mask(rng: np.random.Generator) -> np.ndarray:
    """A smooth brain-shaped blob covering about half of the volume, uint8 [Z, H, W]."""
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    wobble = ndimage.gaussian_filter(rng.normal(0, 1, SHAPE), 6) * 4
    return ((z / 1.05) ** 2 + (y / 0.95) ** 2 + (x / 0.85) ** 2 + 0.1 * wobble < 1.0).astype(np.uint8)


def volume(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anomaly map float32, brain mask uint8, lesion label bool), each [Z, H, W]."""
    mask = brain_mask(rng)
    noise = np.abs(ndimage.gaussian_filter(rng.normal(0, 0.12, SHAPE), 0.8)).astype(np.float32)
    label = np.zeros(SHAPE, dtype=bool)
    for _ in range(3):
        c = [rng.integers(n // 4, 3 * n // 4) for n in SHAPE]
        r = rng.uniform(2, 5)
        zz, yy, xx = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
        label |= ((zz - c[0]) ** 2 * 4 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) < (2 * r) ** 2
    label &= mask > 0
    score = (noise + label * rng.uniform(0.15, 0.35)) * (mask > 0)
    if kind == "sparse":
        score[score < np.quantile(score[mask > 0], 0.9)] = 0
    return score.astype(np.float32), mask, label


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, the functions called in turn ``repeats`` times (one warm-up)."""
    times = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(repeats):
        for k, f in fns.items():
            start = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def stage_table(released, kind: str, repeats: int, rng: np.random.Generator) -> list[dict]:
    """Released vs ours per stage on maps of ``kind``; seconds are medians."""
    score, mask, label = volume(rng, kind)
    def hwz(a):  # the released code's [H, W, Z] layout
        return np.ascontiguousarray(a.transpose(1, 2, 0))
    s_t, m_t, l_t = torch.from_numpy(score), torch.from_numpy(mask), torch.from_numpy(label)
    masked = (s_t * erode_mask_axial(m_t, 3)).numpy()
    filtered = median_filter_3d(torch.from_numpy(masked))
    inside = filtered.numpy()[mask > 0]
    binary = filtered.numpy() > np.quantile(inside, 0.97)  # lesions and speckles of noise: many small components
    rows = []

    def row(stage, fns, per=1, check=None):
        t = interleaved(fns, repeats)
        rows.append({"maps": kind, "stage": stage, "released_s": t["released"] / per, "ours_s": t["ours"] / per,
                     "speedup": t["released"] / t["ours"], **({"identical": check} if check is not None else {})})

    row("erosion + mask, per axial slice", {
        "released": lambda: released.apply_brainmask_volume(torch.from_numpy(hwz(score)), torch.from_numpy(hwz(mask))),
        "ours": lambda: s_t * erode_mask_axial(m_t, 3)}, per=SHAPE[0])
    same = bool(np.array_equal(released.apply_3d_median_filter(hwz(masked)), hwz(filtered.numpy())))
    row("3-D 5³ median, one thread", {"released": lambda: released.apply_3d_median_filter(hwz(masked)),
                                      "ours": lambda: median_filter_3d(torch.from_numpy(masked), threads=1)},
        check=same)
    row(f"3-D 5³ median, {usable_threads()} threads (the default)", {
        "released": lambda: released.apply_3d_median_filter(hwz(masked)),
        "ours": lambda: median_filter_3d(torch.from_numpy(masked))}, check=same)
    kept = released.filter_3d_connected_components(hwz(binary).copy())
    same = bool(np.array_equal(kept, hwz(remove_small_components(torch.from_numpy(binary)).numpy())))
    row("connected components ≤ 7", {"released": lambda: released.filter_3d_connected_components(hwz(binary).copy()),
                                     "ours": lambda: remove_small_components(torch.from_numpy(binary))}, check=same)
    flat, flat_l = filtered.numpy().ravel(), label.ravel()
    ours = average_precision(RankedScores.from_scores(filtered, l_t))
    same = bool(abs(released.compute_prc(flat, flat_l)[0] - ours) < 1e-9)
    row("AUPRC of one volume", {"released": lambda: released.compute_prc(flat, flat_l),
                                "ours": lambda: average_precision(RankedScores.from_scores(filtered, l_t))}, check=same)
    # 100 pooled volumes: 10 post-processed maps, each repeated 10 times with a small gain (distinct values)
    base = [(median_filter_3d(torch.from_numpy(v[0] * erode_mask_axial(torch.from_numpy(v[1]), 3).numpy())), v[2])
            for v in (volume(rng, kind) for _ in range(10))]
    pool_maps = [((m * (1 + 0.01 * i)).contiguous(), torch.from_numpy(lab)) for i in range(10) for m, lab in base]

    def released_bisection():
        x = np.concatenate([m.numpy().ravel() for m, _ in pool_maps])  # (the released code np.appends: slower)
        y = np.concatenate([lab.numpy().ravel() for _, lab in pool_maps]).astype(bool)
        return released.find_best_val(x, y, val_range=(0, np.max(x)), max_steps=10, step=0, max_val=0, max_point=0)

    def ours(search):
        return search(PooledScores.collect(pool_maps, len(pool_maps) * pool_maps[0][0].numel()))  # as evaluate does

    want = released_bisection()
    same = bool(float(want[1]) == ours(bisection_search).threshold)
    t = interleaved({"released": released_bisection, "bisection": lambda: ours(bisection_search),
                     "exact": lambda: ours(exact_search)}, max(1, repeats // 2))
    rows.append({"maps": kind, "stage": "bisection threshold, 100 pooled volumes", "released_s": t["released"],
                 "ours_s": t["bisection"], "speedup": t["released"] / t["bisection"], "identical": same})
    rows.append({"maps": kind, "stage": "exact threshold, 100 pooled volumes", "released_s": t["released"],
                 "ours_s": t["exact"], "speedup": t["released"] / t["exact"]})
    return rows


def write_dataset(root: Path, n: int, rng: np.random.Generator) -> dict[str, Path]:
    """A prepared cache of 2n dense volumes and two maps folders (n val, n test) as ``mddpm predict`` writes."""
    vols = [volume(rng, "dense") for _ in range(2 * n)]
    ids = [f"case{i:03d}" for i in range(2 * n)]
    prepared = root / "prepared"
    prepared.mkdir(parents=True)
    np.save(prepared / "images.npy", np.zeros((2 * n, *SHAPE), np.float32))
    np.save(prepared / "masks.npy", np.stack([v[1] for v in vols]))
    np.save(prepared / "labels.npy", np.stack([v[2] for v in vols]).astype(np.uint8))
    write_json(prepared / "prepared.json", {"case_ids": ids, "affines": [AFFINE.tolist()] * (2 * n)})
    folders = {}
    for split, part in (("val", slice(0, n)), ("test", slice(n, 2 * n))):
        out = root / split
        for cid, (score, _, _) in zip(ids[part], vols[part]):
            write_nifti(out / f"{cid}.nii.gz", score.transpose(1, 2, 0), AFFINE)
        write_json(out / "predict.json", {"prepared": str(prepared), "dataset": str(root), "split": f"lesion_{split}",
                                          "case_ids": ids[part], "run": "synthetic"})
        folders[split] = out
    return folders


def released_evaluate(released, folders: dict[str, Path]) -> None:
    """The released functions doing what ``mddpm evaluate`` does, on the same files."""
    import nibabel as nib

    def load(split):
        meta = json.loads((folders[split] / "predict.json").read_text())
        masks = np.load(Path(meta["prepared"]) / "masks.npy", mmap_mode="r")
        labels = np.load(Path(meta["prepared"]) / "labels.npy", mmap_mode="r")
        for cid in meta["case_ids"]:
            i = int(cid[4:])
            score = np.asarray(nib.load(folders[split] / f"{cid}.nii.gz").get_fdata(dtype=np.float32))
            brain = torch.from_numpy(masks[i].transpose(1, 2, 0).copy())
            vol = released.apply_brainmask_volume(torch.from_numpy(score), brain)
            yield released.apply_3d_median_filter(vol.numpy()), labels[i].transpose(1, 2, 0) > 0

    diffs, segs = None, None
    for diff, seg in load("val"):  # pooled with np.append, as the released code does
        diffs = diff.ravel() if diffs is None else np.append(diffs, diff.ravel(), axis=0)
        segs = seg.ravel().astype(np.int8) if segs is None else np.append(segs, seg.ravel(), axis=0).astype(np.int8)
    _, tau = released.find_best_val(diffs, segs.astype(bool), val_range=(0, np.max(diffs)), max_steps=10, step=0,
                                    max_val=0, max_point=0)
    for diff, seg in load("test"):
        released.compute_roc(diff.ravel(), seg.ravel())
        released.compute_prc(diff.ravel(), seg.ravel())
        released.find_best_val(diff.ravel(), seg.ravel(), val_range=(0, np.max(diff)), max_steps=10, step=0,
                               max_val=0, max_point=0)
        binary = released.filter_3d_connected_components(diff > tau)
        released.dice(binary, seg)
        released.tpr(binary, seg), released.fpr(binary, seg)


def end_to_end(released, sizes: tuple[int, int], tmp: Path, rng: np.random.Generator) -> dict:
    """Seconds of ``mddpm evaluate`` and of :func:`released_evaluate` on n+n volumes for each n in ``sizes``."""
    out = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    for n in sizes:
        folders = write_dataset(tmp / f"n{n}", n, rng)
        cmd = [sys.executable, "-m", "mddpm.cli.main", "evaluate", str(folders["test"]), "--val", str(folders["val"]),
               "--out", str(tmp / f"n{n}" / "eval"), "--no-progress"]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        ours = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"mddpm evaluate failed:\n{done.stderr[-2000:]}")
        start = time.perf_counter()
        released_evaluate(released, folders)
        out[n] = {"ours_s": ours, "released_s": time.perf_counter() - start}
    a, b = sizes
    extra = 2 * (b - a)
    out["marginal_per_volume"] = {"ours_s": (out[b]["ours_s"] - out[a]["ours_s"]) / extra,
                                  "released_s": (out[b]["released_s"] - out[a]["released_s"]) / extra}
    m = out["marginal_per_volume"]
    m["speedup"] = m["released_s"] / m["ours_s"]
    return out


def _ms(s: float) -> str:
    return f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:,.1f} ms" if s < 10 else f"{s:,.1f} s"


def to_markdown(result: dict) -> str:
    lines = markdown_header("Evaluation speed: released mDDPM functions vs mddpm", result["machine"],
                            result["command"])
    lines += [f"Medians of {result['repeats']} interleaved runs (threshold rows: {max(1, result['repeats'] // 2)}); "
              "96×96×50 maps, brain ≈ half the volume; ours with one torch thread, as `mddpm evaluate` runs "
              "(its compiled median splits a volume between the usable threads; `mddpm evaluate` post-processes "
              "that many volumes at once instead, one thread each; the released code is single-threaded NumPy); "
              "\"identical\" = same output as the released function.", "",
              "| maps | stage | released | ours | speed-up | identical |", "|---|---|---|---|---|---|"]
    for r in result["stages"]:
        lines.append(f"| {r['maps']} | {r['stage']} | {_ms(r['released_s'])} | {_ms(r['ours_s'])} | "
                     f"{r['speedup']:.1f}× | {r.get('identical', '–')} |")
    e = result.get("end_to_end")
    if e:
        a, b = result["sizes"]
        lines += ["", "## End to end (`mddpm evaluate` subprocess vs the released functions in-process, "
                  "dense maps)", "",
                  "| volumes (val + test) | released | ours |", "|---|---|---|"]
        for n in (a, b):
            lines.append(f"| {n} + {n} | {_ms(e[str(n)]['released_s'])} | {_ms(e[str(n)]['ours_s'])} |")
        m = e["marginal_per_volume"]
        lines += ["", f"Marginal cost per volume ({2 * (b - a)} extra volumes): released {_ms(m['released_s'])}, "
                  f"ours {_ms(m['ours_s'])}: **{m['speedup']:.1f}×**."]
    lines += ["", f"Wall time of this script: {result['wall_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--released", required=True, type=Path, help="checkout of github.com/hasan1292/mDDPM")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "eval_speed",
                   help="output path without suffix (.md and .json are written)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timed runs per stage (default 3)")
    p.add_argument("--sizes", type=int, nargs=2, default=(10, 40), metavar=("A", "B"),
                   help="end to end on A+A and B+B volumes (default 10 40); 0 0 skips it")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    start = time.perf_counter()
    released = import_released(args.released.resolve())
    info = machine_info()
    rng = np.random.default_rng(args.seed)
    result = {"command": shlex.join(["python", *sys.argv]), "machine": info, "repeats": args.repeats,
              "sizes": list(args.sizes), "stages": []}
    for kind in ("dense", "sparse"):
        with cpu_threads():  # torch's thread count as `mddpm evaluate` sets it (the released code is NumPy)
            result["stages"] += stage_table(released, kind, args.repeats, rng)
        print(f"{kind}: done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    if args.sizes[0] > 0:
        with tempfile.TemporaryDirectory() as tmp:
            e2e = end_to_end(released, tuple(args.sizes), Path(tmp), rng)
        result["end_to_end"] = {str(k): v for k, v in e2e.items()}
    write_results(result, info, args.out, to_markdown, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
