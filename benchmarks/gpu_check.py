"""The GPU check: what a session lent a GPU should measure in its first five minutes.

    bash benchmarks/gpu_check.sh                # on the GPU machine; writes benchmarks/results/gpu_check.{md,json}
    python benchmarks/gpu_check.py --dry-run    # CPU, tiny sizes, under a minute: checks that every stage runs

Stages (each timed with CUDA synchronised; a failing stage is recorded with its error and the
others still run):

1. ``train``: one training step (``training_loss`` + backward) of ``mddpm-released`` at the paper
   preset (96², batch 32, 37.5 M parameters) in fp32 and bf16 autocast: slices/s and achieved
   TFLOP/s (3 × the net's forward FLOPs × batch / time) against the device's dense bf16 peak; the
   bare network step on the same batch gives the noise + masking share of a step.
2. ``predict``: ``score_volume`` (50 slices × 4 boxes in one batch) per paper-grid volume, fp32 and bf16.
3. ``postprocess``: mask + erosion + 5³ median and component removal of one 96×96×50 map on the
   device; ``threshold``: bisection and exact search over 100 pooled maps on the device.
4. ``lightning``: ``mddpm train`` through Lightning on CUDA: a 50-step smoke run, then a demo model
   trained for ``--parity-steps`` on a small synthetic dataset, predicted in fp32 and bf16 and
   evaluated both ways (``parity``: the change of every metric); with more than one GPU visible,
   a one-node DDP smoke run over all of them.

It needs only what ``pip install -e .`` brings beside a CUDA build of torch.
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
import traceback
from pathlib import Path

import numpy as np
import torch

from flops import unet_flops
from machine import BF16_PEAK_TFLOPS, REPO, machine_info, markdown_header
from mddpm.config import build_method, resolve_config
from mddpm.evaluation.metrics import PooledScores
from mddpm.evaluation.postprocess import postprocess_map, remove_small_components
from mddpm.evaluation.threshold import bisection_search, exact_search
from mddpm.inference.predict import score_volume

FULL = {"overrides": [], "preset": "paper", "batch": 32, "size": 96, "depth": 50, "repeats": 5, "maps": 100,
        "parity_steps": 1500,
        "synth": dict(n_train=40, n_val=4, n_test=0, n_tumour_val=8, n_tumour_test=16, n_ms_val=0, n_ms_test=0)}
DRY = {"preset": "demo", "batch": 1, "size": 24, "depth": 2, "repeats": 1, "maps": 3, "parity_steps": 2, "synth": None,
       "overrides": ["model.net.model_channels=8", "model.net.head_channels=8", "train.batch_size=2"]}


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` after one warm-up call, synchronising CUDA around each call."""
    def once():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start
    once()
    return statistics.median(once() for _ in range(repeats))


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def synthetic_slices(batch: int, size: int, device: torch.device, gen: torch.Generator) -> dict:
    """A batch of brain-like slices [B, 1, size, size] in [0, 1] with their masks."""
    yy, xx = torch.meshgrid(*(torch.linspace(-1, 1, size, device=device),) * 2, indexing="ij")
    mask = ((yy / 0.8) ** 2 + (xx / 0.7) ** 2 <= 1).float().expand(batch, 1, size, size)
    image = (0.5 + 0.1 * torch.rand(batch, 1, size, size, generator=gen, device=device)) * mask
    return {"image": image.contiguous(), "mask": mask.contiguous()}


def stage_train(s: dict, device: torch.device) -> dict:
    method = build_method(resolve_config("mddpm-released", s["preset"], s["overrides"])).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    data = synthetic_slices(s["batch"], s["size"], device, gen)
    flops = 3 * unet_flops(method.net, s["size"], s["size"]) * s["batch"]
    t = torch.full((s["batch"],), 499, device=device, dtype=torch.long)
    x0 = data["image"] * 2 - 1
    noised = method.diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=gen, device=device))
    out = {"preset": s["preset"], "batch": s["batch"], "size": s["size"], "gflop_per_step": flops / 1e9}
    for precision in ("32", "bf16"):
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

        def full():
            method.zero_grad(set_to_none=True)
            with autocast:
                loss = method.training_loss(data, gen)
            loss.backward()

        def bare():
            method.zero_grad(set_to_none=True)
            with autocast:
                loss = (method.net(noised, t) - x0).abs().mean()
            loss.backward()

        full_s, bare_s = timed(full, device, s["repeats"]), timed(bare, device, s["repeats"])
        peak = peak_tflops(device)
        out[precision] = {"step_s": full_s, "bare_net_step_s": bare_s, "slices_per_s": s["batch"] / full_s,
                          "tflops": flops / full_s / 1e12, "noise_masking_share": 1 - bare_s / full_s,
                          "percent_of_bf16_peak": 100 * flops / full_s / 1e12 / peak if peak else None}
    return out


def stage_predict(s: dict, device: torch.device) -> dict:
    method = build_method(resolve_config("mddpm-released", s["preset"], s["overrides"])).to(device).eval()
    gen = torch.Generator(device=device).manual_seed(0)
    vol = synthetic_slices(s["depth"], s["size"], device, gen)
    out = {"preset": s["preset"], "volume": [s["depth"], s["size"], s["size"]]}
    for precision in ("32", "bf16"):
        out[precision] = {"seconds_per_volume": timed(
            lambda: score_volume(method, vol["image"], vol["mask"], gen, precision=precision), device, s["repeats"])}
    return out


def _maps(n: int, s: dict, device: torch.device, gen: torch.Generator):
    depth = max(s["depth"], 8)
    zz, yy, xx = torch.meshgrid(*(torch.linspace(-1, 1, k, device=device) for k in (depth, s["size"], s["size"])),
                                indexing="ij")
    brain = (zz ** 2 + (yy / 0.9) ** 2 + (xx / 0.8) ** 2 <= 1).float()
    lesion = ((zz - 0.2) ** 2 + (yy - 0.3) ** 2 + xx ** 2 <= 0.04) & (brain > 0)
    for _ in range(n):
        score = (0.1 * torch.rand(brain.shape, generator=gen, device=device) + 0.3 * lesion) * brain
        yield score, brain, lesion


def stage_postprocess(s: dict, device: torch.device) -> dict:
    gen = torch.Generator(device=device).manual_seed(0)
    score, brain, lesion = next(_maps(1, s, device, gen))
    filtered = postprocess_map(score, brain)
    binary = filtered > 0.08
    out = {"volume": list(score.shape), "device": str(device),
           "postprocess_s": timed(lambda: postprocess_map(score, brain), device, s["repeats"]),
           "components_s": timed(lambda: remove_small_components(binary), device, s["repeats"])}
    pooled_maps = [(postprocess_map(m, b), les) for m, b, les in _maps(s["maps"], s, device, gen)]

    def pool():
        return PooledScores.pool([PooledScores.from_scores(m, les) for m, les in pooled_maps])

    out["threshold_volumes"] = s["maps"]
    out["bisection_s"] = timed(lambda: bisection_search(pool()), device, s["repeats"])
    out["exact_s"] = timed(lambda: exact_search(pool()), device, s["repeats"])
    return out


def _ddp_smoke(data: Path, run: Path, log: Path, gpus: int) -> float:
    """``mddpm train`` over all GPUs of this node (Lightning launches one process per GPU): seconds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "mddpm.cli.main", "train", "--data", str(data), "--method", "mddpm-fpmcm",
           "--preset", "demo", "--accelerator", "gpu", "--devices", str(gpus), "--out", str(run), "--no-progress",
           "--set", "train.max_steps=20", "--set", "train.val_every=1000000"]
    start = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"DDP smoke run exited {done.returncode}: {log.read_text()[-1500:]}")
    return time.perf_counter() - start


def phantom_dataset(root: Path, shape=(16, 16, 8)) -> Path:
    """A tiny dataset for the dry run (ellipsoid brains, a blob lesion in the tumour splits, 2 mm)."""
    from mddpm.data.dataset import save_dataset_json
    from mddpm.io import write_nifti

    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    brain = (zz ** 2 / 0.8 + yy ** 2 / 0.7 + xx ** 2 / 0.9) < 1
    lesion = ((zz - 0.2) ** 2 + yy ** 2 + (xx + 0.1) ** 2 < 0.15) & brain
    cases, splits = [], {"train": [], "val": [], "tumour_val": [], "tumour_test": []}
    for i, split in enumerate(["train", "train", "val", "tumour_val", "tumour_test"]):
        cid = f"case{i}"
        image = np.where(brain, 0.5 + 0.1 * rng.standard_normal(shape), 0).astype(np.float32)
        case = {"id": cid, "role": "healthy", "group": None, "image": f"images/{cid}.nii.gz",
                "mask": f"masks/{cid}.nii.gz", "label": None}
        if split.startswith("tumour"):
            image[lesion] = 1.0
            write_nifti(root / f"labels/{cid}.nii.gz", lesion.astype(np.uint8), affine)
            case.update(role="anomalous", group="blob", label=f"labels/{cid}.nii.gz")
        write_nifti(root / case["image"], image, affine)
        write_nifti(root / case["mask"], brain.astype(np.uint8), affine)
        cases.append(case)
        splits[split].append(cid)
    save_dataset_json(root, {"name": "phantom", "modality": "T2", "cases": cases, "splits": splits,
                             "geometry": {"space": "phantom", "spacing_mm": [2.0] * 3, "shape": list(shape)},
                             "folds": [{"train": splits["train"], "val": splits["val"]}], "label_encoding": "binary",
                             "provenance": [{"step": "phantom", "tool": "benchmarks/gpu_check.py", "settings": {}}]})
    return root


def stage_lightning(s: dict, device: torch.device, work: Path, log: Path) -> dict:
    """Lightning training on the device (smoke, DDP smoke, the parity model), then fp32/bf16 parity."""
    from mddpm.data.synth.build import synthesize
    from mddpm.evaluation.evaluate import evaluate
    from mddpm.inference.predict import predict
    from mddpm.training.train import train

    accelerator = "gpu" if device.type == "cuda" else "cpu"
    if s["synth"] is None:
        data = phantom_dataset(work / "data")
    else:
        data = synthesize(work / "data", **s["synth"], seed=0, workers=min(8, os.cpu_count() or 1))
    common = dict(dataset_root=data, method="mddpm-fpmcm", preset="demo", accelerator=accelerator, progress=False)
    quiet = ["train.val_every=1000000", *s["overrides"]]
    out = {"accelerator": accelerator}
    if device.type == "cuda":
        start = time.perf_counter()
        train(out=work / "smoke", overrides=quiet + ["train.max_steps=50"], **common)
        out["smoke_steps"], out["smoke_s"] = 50, time.perf_counter() - start
        if torch.cuda.device_count() > 1:
            out["ddp_devices"] = torch.cuda.device_count()
            out["ddp_smoke_s"] = _ddp_smoke(data, work / "ddp", log, torch.cuda.device_count())
    run = work / "parity_run"
    start = time.perf_counter()
    train(out=run, overrides=quiet + [f"train.max_steps={s['parity_steps']}"], **common)
    out["parity_steps"], out["parity_train_s"] = s["parity_steps"], time.perf_counter() - start
    metrics = {}
    for precision in ("32", "bf16"):
        maps = {split: predict(run, data, split, work / f"maps_{precision}_{split}", precision=precision,
                               device=device.type, progress=False) for split in ("tumour_val", "tumour_test")}
        report = evaluate(maps["tumour_test"], maps["tumour_val"], work / f"eval_{precision}", rules=["exact"],
                          device=device.type, progress=False, log=lambda msg: None)
        agg = report["aggregate"]
        metrics[precision] = {"auprc": agg["auprc"]["mean"], "auroc": agg["auroc"]["mean"],
                              **{f"dice_{rule}": agg["rules"][rule]["dice"]["mean"] for rule in ("bisection", "exact")}}
    out["parity"] = {k: {"fp32": metrics["32"][k], "bf16": metrics["bf16"][k],
                         "change": None if metrics["32"][k] is None or metrics["bf16"][k] is None
                         else metrics["bf16"][k] - metrics["32"][k]} for k in metrics["32"]}
    return out


def _fmt(x, digits=3) -> str:
    return "–" if x is None else f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def to_markdown(result: dict) -> str:
    dry = " — DRY RUN (CPU, tiny sizes: no figure here means anything)" if result["dry_run"] else ""
    lines = markdown_header("GPU check" + dry, result["machine"], result["command"])
    st = result["stages"]
    for name, r in st.items():
        if "error" in r:
            lines += [f"**{name}: failed** — `{r['error']}`", ""]
    if "train" in st and "error" not in st["train"]:
        t = st["train"]
        lines += [f"## Training step ({t['preset']} preset, batch {t['batch']}, {t['size']}², "
                  f"{t['gflop_per_step']:.0f} GFLOP)", "",
                  "| precision | step | slices/s | TFLOP/s | % of bf16 peak | noise + masking share |",
                  "|---|---|---|---|---|---|"]
        for p in ("32", "bf16"):
            r = t[p]
            lines.append(f"| {p} | {r['step_s'] * 1e3:.1f} ms | {r['slices_per_s']:.1f} | {r['tflops']:.2f} | "
                         f"{_fmt(r['percent_of_bf16_peak'])} | {100 * r['noise_masking_share']:.1f} % |")
        lines.append("")
    if "predict" in st and "error" not in st["predict"]:
        p = st["predict"]
        lines += [f"Predict ({p['preset']} grid {p['volume']}, all slices × boxes): fp32 "
                  f"{p['32']['seconds_per_volume']:.3f} s, "
                  f"bf16 {p['bf16']['seconds_per_volume']:.3f} s per volume.", ""]
    if "postprocess" in st and "error" not in st["postprocess"]:
        p = st["postprocess"]
        lines += [f"On {p['device']}: mask + erosion + median of a {p['volume']} map {p['postprocess_s'] * 1e3:.1f} "
                  "ms, "
                  f"components {p['components_s'] * 1e3:.1f} ms; thresholds over {p['threshold_volumes']} pooled maps "
                  f"(pooling included): bisection {p['bisection_s'] * 1e3:.1f} ms, "
                  f"exact {p['exact_s'] * 1e3:.1f} ms.", ""]
    if "lightning" in st and "error" not in st["lightning"]:
        lt = st["lightning"]
        smoke = f"{lt['smoke_steps']}-step smoke run {lt['smoke_s']:.1f} s" if "smoke_s" in lt else "no CUDA smoke run"
        lines += [f"Lightning ({lt['accelerator']}): {smoke}"
                  + (f"; DDP over {lt['ddp_devices']} GPUs {lt['ddp_smoke_s']:.1f} s" if "ddp_devices" in lt else
                     "; DDP: not run (one GPU or none visible)") + f"; parity model trained {lt['parity_steps']} steps "
                  f"in {lt['parity_train_s']:.1f} s.", "", "| metric (tumour_test) | fp32 | bf16 | change |",
                  "|---|---|---|---|"]
        for k, v in lt["parity"].items():
            lines.append(f"| {k} | {_fmt(v['fp32'], 4)} | {_fmt(v['bf16'], 4)} | {_fmt(v['change'], 2)} |")
        lines.append("")
    lines.append(f"Wall time {result['wall_s']:.0f} s.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (< 1 minute): check that every stage runs")
    p.add_argument("--out", type=Path, help="output path without suffix (default benchmarks/results/gpu_check, "
                                            "or gpu_check_dry_run with --dry-run)")
    p.add_argument("--stages", nargs="+", default=["train", "predict", "postprocess", "lightning"],
                   choices=["train", "predict", "postprocess", "lightning"])
    p.add_argument("--parity-steps", type=int, help="training steps of the parity model (default 1500; dry run 4)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    s = dict(DRY if args.dry_run else FULL)
    if args.parity_steps:
        s["parity_steps"] = args.parity_steps
    if args.dry_run:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("gpu_check: no CUDA device visible (use --dry-run to check the script on a CPU)", file=sys.stderr)
        return 2
    out = args.out or REPO / "benchmarks" / "results" / ("gpu_check_dry_run" if args.dry_run else "gpu_check")
    result = {"command": shlex.join(["python", *sys.argv]), "dry_run": args.dry_run, "machine": machine_info(),
              "settings": {k: v for k, v in s.items()}, "stages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "ddp.log"
        for name in args.stages:
            t0 = time.perf_counter()
            try:
                fn = {"train": stage_train, "predict": stage_predict, "postprocess": stage_postprocess}.get(name)
                result["stages"][name] = fn(s, device) if fn else stage_lightning(s, device, Path(tmp), log)
            except Exception as e:  # recorded; the other stages still run
                result["stages"][name] = {"error": f"{type(e).__name__}: {e}"[:2000],
                                          "traceback": traceback.format_exc()[-3000:]}
            result["stages"][name]["stage_wall_s"] = time.perf_counter() - t0
            print(f"gpu_check: {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 1 if any("error" in r for r in result["stages"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
