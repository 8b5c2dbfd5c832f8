"""``predict``: a trained run + a dataset split -> one anomaly map and one reconstruction per case.

Writes ``OUT/<case>.nii.gz`` (the raw score map, float32 ``[H, W, Z]`` on the prepared grid with its
affine), ``OUT/recon/<case>.nii.gz`` (the reconstruction) and, last, ``OUT/predict.json``; a folder
without ``predict.json`` is an unfinished prediction. Volumes are streamed one at a time, each as
one batch of its slices (the method splits it into chunks if it must).

Each case gets its own generator seeded from ``(train.seed, crc32(case id))``, so a case's map does not
depend on the split, the order or the other cases.

Options beyond the published protocol (all off by default):
- ``t_fix=[t1, t2, ...]``: noise-level ensemble (cDDPM): the mean of the score maps (and of the
  reconstructions) over the listed diffusion steps (methods with a ``t_fix`` attribute); every step
  draws the same noise (the case's generator restarts), so it equals the mean of single-step runs;
- ``noise_per="slice"`` / ``"volume"``: independent noise per slice, or one field shared by the
  volume (methods with a ``noise_shared`` attribute; default: as the run was trained, which for the
  published presets is one shared field);
- ``score="ssim-l1"``: pDDPM-IQA's fused score (:mod:`mddpm.inference.scores`);
- ``precision="bf16"``: bf16 autocast.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mddpm import __version__
from mddpm.data.dataset import load_dataset
from mddpm.data.prepare import get_grid, load_prepared, prepare_dataset
from mddpm.errors import MddpmError
from mddpm.inference.scores import SCORES, SSIM_L1_ALPHA, SSIM_SIGMA, SSIM_WINDOW, anomaly_score
from mddpm.io import case_file, check_output_folder, clear_outputs, read_json, write_json, write_nifti
from mddpm.methods.base import AnomalyMethod
from mddpm.progress import track
from mddpm.run_folder import RunFolder
from mddpm.seeds import derive_seed
from mddpm.weights import build_from_weights

PRECISIONS = ("32", "bf16")
NOISE_PER = ("volume", "slice")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA device if there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as e:
        raise MddpmError(f"--device {device!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MddpmError(f"--device {device}: no CUDA device available")
    return device


def case_generator(seed: int, case_id: str, device: torch.device) -> torch.Generator:
    """The generator of one case: seeded from ``(seed, crc32(case_id))``, on ``device``."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, zlib.crc32(case_id.encode())))


def configure_method(method: AnomalyMethod, noise_per: str | None = None, chunk_size: int | None = None) -> str | None:
    """Apply the inference options ``noise_per`` and ``chunk_size`` (:class:`~mddpm.methods.base.InferenceOptions`);
    ``None`` keeps the run's setting. An option the method does not have is an error, never ignored.
    Returns the effective noise sharing (``"volume"``, ``"slice"``, or ``None`` for a method without noise)."""
    name, options = type(method).__name__, method.inference_options()
    if noise_per is not None:
        if noise_per not in NOISE_PER:
            raise MddpmError(f"--noise-per {noise_per!r}: expected one of {', '.join(NOISE_PER)}")
        if options.noise_shared is None:
            raise MddpmError(f"--noise-per {noise_per}: method {name} draws no test-time noise")
        options = replace(options, noise_shared=noise_per == "volume")
    if chunk_size is not None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise MddpmError(f"--chunk-size {chunk_size!r}: must be a positive integer")
        if options.chunk_size is None:
            raise MddpmError(f"--chunk-size: method {name} has no chunk size")
        options = replace(options, chunk_size=chunk_size)
    method.set_inference_options(options)
    if options.noise_shared is None:
        return None
    return "volume" if options.noise_shared else "slice"


def check_t_fix(method: AnomalyMethod, t_fix) -> list[int] | None:
    """Validate a noise-level ensemble: ``None`` or a non-empty list of ints, for methods with ``t_fix``."""
    if t_fix is None:
        return None
    options = method.inference_options()
    if options.t_fix is None:
        raise MddpmError(f"--t-fix: method {type(method).__name__} has no diffusion step to set")
    if isinstance(t_fix, int):
        t_fix = [t_fix]
    if not t_fix or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in t_fix):
        raise MddpmError(f"--t-fix {t_fix!r}: expected one or more non-negative integers")
    if options.timesteps is not None and max(t_fix) >= options.timesteps:
        raise MddpmError(f"--t-fix {max(t_fix)}: outside [0, {options.timesteps - 1}] (the model has "
                         f"{options.timesteps} diffusion steps)")
    return list(t_fix)


def _overrides_anomaly_map(method: AnomalyMethod) -> bool:
    return type(method).anomaly_map is not AnomalyMethod.anomaly_map


@torch.no_grad()
def score_volume(method: AnomalyMethod, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
                 score: str = "l1", t_fix: list[int] | None = None, precision: str = "32"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Score one volume's slices ``image``/``mask`` ``[S, 1, H, W]``: ``(score map, reconstruction)``,
    both ``[S, 1, H, W]`` float32 on the input's device.

    ``score="l1"`` uses the method's own :meth:`anomaly_map` (|x − x̂| unless the method defines
    another; then the map and the reconstruction are computed from the same generator state).
    ``t_fix`` averages maps and reconstructions over those diffusion steps; each step starts from the
    generator's state on entry, so the ensemble is the mean of the single-step predictions.
    """
    steps = [None] if t_fix is None else t_fix
    saved = method.inference_options()
    bf16 = precision == "bf16"
    autocast = torch.autocast(image.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    start_state = generator.get_state()
    total_map, total_recon = None, None
    try:
        for t in steps:
            if t is not None:
                method.set_inference_options(replace(saved, t_fix=t))
            generator.set_state(start_state)  # every ensemble member starts from the case's seed
            with autocast:
                recon = method.reconstruct(image, mask, generator).float()
                if score == "l1" and _overrides_anomaly_map(method):
                    generator.set_state(start_state)  # the map's reconstruction is the one returned
                    amap = method.anomaly_map(image, mask, generator).float()
                else:
                    amap = anomaly_score(image, recon, score)
            total_map = amap if total_map is None else total_map + amap
            total_recon = recon if total_recon is None else total_recon + recon
    finally:
        method.set_inference_options(saved)
    return total_map / len(steps), total_recon / len(steps)


def predict(run: str | os.PathLike, dataset_root: str | os.PathLike, split: str, out: str | os.PathLike,
            precision: str = "32", noise_per: str | None = None, t_fix: list[int] | None = None, score: str = "l1",
            chunk_size: int | None = None, device: str = "auto", force: bool = False, progress: bool = True,
            weights: str = "best") -> Path:
    """Write the maps of split ``split`` of ``dataset_root`` with ``RUN/<weights>.pt`` to ``out`` (see
    module docstring); returns ``out``. Prints seconds per volume."""
    run = Path(run).resolve()
    dataset_root = Path(dataset_root).resolve()
    if precision not in PRECISIONS:
        raise MddpmError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if score not in SCORES:
        raise MddpmError(f"--score {score!r}: expected one of {', '.join(SCORES)}")
    out = Path(out).resolve()
    device = resolve_device(device)
    method, payload = build_from_weights(RunFolder(run).weights(weights))
    cfg = payload["config"]
    noise_per = configure_method(method, noise_per, chunk_size)
    t_values = check_t_fix(method, t_fix)
    options = method.inference_options()
    case_ids = [c.id for c in load_dataset(dataset_root).split(split)]
    if not case_ids:
        raise MddpmError(f"{dataset_root / 'dataset.json'}: split {split!r} is empty")
    earlier = check_output_folder(out, force, _own_files(out, case_ids))
    prepared = load_prepared(prepare_dataset(dataset_root, get_grid(cfg["data"]["grid"]), progress=progress))
    method.to(device)

    clear_outputs(out, earlier)
    seconds = []
    for case_id in track(case_ids, f"predict {split}", progress):
        image, mask, _ = prepared.volume(case_id)
        # a copy: the cache is read-only
        x = torch.from_numpy(np.array(image, dtype=np.float32)).unsqueeze(1).to(device)
        m = torch.from_numpy(np.array(mask, dtype=np.float32)).unsqueeze(1).to(device)
        start = time.perf_counter()
        amap, recon = score_volume(method, x, m, case_generator(cfg["train"]["seed"], case_id, device),
                                   score, t_values, precision)
        amap, recon = amap[:, 0].cpu().numpy(), recon[:, 0].cpu().numpy()  # [Z, H, W]; waits for the device
        seconds.append(time.perf_counter() - start)
        affine = prepared.affines[prepared.index(case_id)]
        write_nifti(case_file(out, case_id, ".nii.gz"), amap.transpose(1, 2, 0), affine)
        write_nifti(case_file(out, case_id, ".nii.gz", "recon"), recon.transpose(1, 2, 0), affine)

    settings = {
        "weights": str(RunFolder(run).weights(weights)), "weights_step": payload["step"], "precision": precision,
        "noise_per": noise_per, "t_fix": t_values or (None if options.t_fix is None else [options.t_fix]),
        "score": score, "chunk_size": options.chunk_size,
        "device": str(device), "seed": cfg["train"]["seed"], "seeding": "per case: (train.seed, crc32(case id))",
        "seconds_per_volume": float(np.mean(seconds)), "seconds_per_volume_first": seconds[0],
        "mddpm_version": __version__,
    }
    if score == "ssim-l1":
        settings["ssim"] = {"alpha": SSIM_L1_ALPHA, "window": SSIM_WINDOW, "sigma": SSIM_SIGMA}
    write_json(out / "predict.json", {"prepared": str(prepared.folder.resolve()), "dataset": str(dataset_root),
                                      "split": split, "case_ids": case_ids, "run": str(run), "config": cfg,
                                      "settings": settings})
    steady = f", {np.mean(seconds[1:]):.3f} s after the first" if len(seconds) > 1 else ""
    print(f"predicted {len(case_ids)} volumes on {device}: {np.mean(seconds):.3f} s/volume{steady}; maps in {out}")
    return out


def _own_files(out: Path, case_ids: list[str]) -> list[str]:
    """What predict writes into ``out`` for ``case_ids``, and what an earlier predict.json says it wrote
    (``--force`` removes those and refuses a folder holding anything else)."""
    try:
        earlier = read_json(out / "predict.json").get("case_ids", []) if (out / "predict.json").is_file() else []
    except MddpmError:
        earlier = []
    ids = {str(c) for c in (earlier if isinstance(earlier, list) else [])} | set(case_ids)
    names = [glob.escape(f"{c}.nii.gz") for c in sorted(ids)]
    return ["predict.json", *names, *(f"recon/{n}" for n in names)]

