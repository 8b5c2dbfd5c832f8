"""``predict``: a trained run + a dataset split -> one anomaly map and one reconstruction per case.

Writes ``OUT/<case>.nii.gz`` (the raw score map, float32 ``[H, W, Z]`` on the prepared grid with its
affine), ``OUT/recon/<case>.nii.gz`` (the reconstruction) and, last, ``OUT/predict.json``; a folder
without ``predict.json`` is an unfinished prediction. Every file is written atomically, and
``OUT/predict.started.json`` records the request while it runs: running the same request again on an
interrupted folder (no ``--force`` needed) scores only the cases whose map is missing. Volumes are
streamed one at a time, each as one batch of its slices (the method splits it into chunks if it must).

Each case gets its own generator seeded from ``(train.seed, crc32(case id))``, so a case's map does not
depend on the split, the order or the other cases.

Options beyond the published protocol (all off by default):
- ``t_fix=[t1, t2, ...]``: noise-level ensemble (cDDPM): the mean of the score maps (and of the
  reconstructions) over the listed diffusion steps (methods with a ``t_fix`` attribute); every step
  draws the same noise (the case's generator restarts), so it equals the mean of single-step runs;
- ``noise_per="slice"`` / ``"volume"``: independent noise per slice, or one field shared by the
  volume (methods with a ``noise_shared`` attribute; default: as the run was trained, which for the
  published presets is one shared field);
- ``score="ssim-l1"``: pDDPM-IQA's fused score; ``score="mahalanobis"`` / ``"mahalanobis-local"``: the
  distance from ``samples`` stochastic reconstructions (the reconstruction written is their mean;
  :mod:`mddpm.inference.scores`);
- ``precision="bf16"``: bf16 autocast.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from mddpm._version import __version__
from mddpm.data.cache import load_prepared
from mddpm.data.dataset import load_dataset
from mddpm.data.grids import get_grid
from mddpm.data.prepare import prepare_dataset
from mddpm.device import resolve_device
from mddpm.errors import MddpmError
from mddpm.folder_lock import writes_folder
from mddpm.inference.scores import (
    MAHALANOBIS_EPS,
    MAHALANOBIS_SAMPLES,
    SAMPLED_SCORES,
    SCORES,
    SSIM_L1_ALPHA,
    SSIM_SIGMA,
    SSIM_WINDOW,
    anomaly_score,
    mahalanobis_score,
)
from mddpm.io import case_file, check_output_folder, clear_outputs, read_json, write_json, write_nifti
from mddpm.messages import say
from mddpm.methods.base import AnomalyMethod
from mddpm.parallel import sigterm_raises
from mddpm.progress import track
from mddpm.run_folder import RunFolder
from mddpm.seeds import derive_seed
from mddpm.weights import build_from_weights

PRECISIONS = ("32", "bf16")
STARTED = "predict.started.json"  # the request of a prediction under way; replaced by predict.json at the end
NOISE_PER = ("volume", "slice")


def case_generator(seed: int, case_id: str, device: torch.device) -> torch.Generator:
    """The generator of one case: seeded from ``(seed, crc32(case_id))``, on ``device``."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, zlib.crc32(case_id.encode())))


def configure_method(method: AnomalyMethod, noise_per: str | None = None, chunk_size: int | None = None) -> str | None:
    """Apply the inference options ``noise_per`` and ``chunk_size`` (the method's declared
    :meth:`~mddpm.methods.base.AnomalyMethod.inference_settings`); ``None`` keeps the run's setting. An option
    the method does not have is an error, never ignored. Returns the effective noise sharing (``"volume"``,
    ``"slice"``, or ``None`` for a method without test-time noise)."""
    name, settings = type(method).__name__, method.inference_settings()
    changes = {}
    if noise_per is not None:
        if noise_per not in NOISE_PER:
            raise MddpmError(f"--noise-per {noise_per!r}: expected one of {', '.join(NOISE_PER)}")
        if "noise_shared" not in settings:
            raise MddpmError(f"--noise-per {noise_per}: method {name} draws no test-time noise")
        changes["noise_shared"] = noise_per == "volume"
    if chunk_size is not None:
        if "chunk_size" not in settings:
            raise MddpmError(f"--chunk-size: method {name} has no chunk size")
        changes["chunk_size"] = chunk_size
    method.set_inference(**changes)
    shared = method.inference_settings().get("noise_shared")
    return None if shared is None else "volume" if shared else "slice"


def check_t_fix(method: AnomalyMethod, t_fix) -> list[int] | None:
    """Validate a noise-level ensemble: ``None`` or a non-empty list of ints, each a step the method takes."""
    if t_fix is None:
        return None
    settings = method.inference_settings()
    if "t_fix" not in settings:
        raise MddpmError(f"--t-fix: method {type(method).__name__} has no diffusion step to set")
    if isinstance(t_fix, int):
        t_fix = [t_fix]
    if not t_fix or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in t_fix):
        raise MddpmError(f"--t-fix {t_fix!r}: expected one or more non-negative integers")
    try:
        for t in t_fix:
            method.set_inference(t_fix=t)  # the method checks its range
    finally:
        method.set_inference(t_fix=settings["t_fix"])
    return list(t_fix)


@torch.no_grad()
def score_volume(method: AnomalyMethod, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
                 score: str = "l1", t_fix: list[int] | None = None, precision: str = "32",
                 samples: int = MAHALANOBIS_SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """Score one volume's slices ``image``/``mask`` ``[S, 1, H, W]``: ``(score map, reconstruction)``,
    both ``[S, 1, H, W]`` float32 on the input's device.

    ``score="l1"`` uses the method's own :meth:`anomaly_map` (|x − x̂| unless the method defines
    another; then the map and the reconstruction are computed from the same generator state).
    ``t_fix`` averages maps and reconstructions over those diffusion steps; each step starts from the
    generator's state on entry, so the ensemble is the mean of the single-step predictions.
    A sampled score (``mahalanobis``) draws ``samples`` reconstructions one after another from the
    generator (each with new noise) and returns the distance and their mean.
    """
    bf16 = precision == "bf16"
    autocast = torch.autocast(image.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    if score in SAMPLED_SCORES:
        with autocast:
            recons = torch.stack([method.reconstruct(image, mask, generator).float() for _ in range(samples)])
        return mahalanobis_score(image, recons, local=score == "mahalanobis-local"), recons.mean(0)
    steps = [None] if t_fix is None else t_fix
    saved = method.inference_settings()
    start_state = generator.get_state()
    total_map, total_recon = None, None
    try:
        for t in steps:
            if t is not None:
                method.set_inference(t_fix=t)
            generator.set_state(start_state)  # every ensemble member starts from the case's seed
            with autocast:
                recon = method.reconstruct(image, mask, generator).float()
                if score == "l1" and not method.map_is_residual:
                    generator.set_state(start_state)  # the map's reconstruction is the one returned
                    amap = method.anomaly_map(image, mask, generator).float()
                else:
                    amap = anomaly_score(image, recon, score)
            total_map = amap if total_map is None else total_map + amap
            total_recon = recon if total_recon is None else total_recon + recon
    finally:
        method.set_inference(**saved)
    return total_map / len(steps), total_recon / len(steps)


@writes_folder("out", inputs=("run", "dataset_root", "cache"))
def predict(run: str | os.PathLike, dataset_root: str | os.PathLike, split: str, out: str | os.PathLike,
            precision: str = "32", noise_per: str | None = None, t_fix: list[int] | None = None, score: str = "l1",
            chunk_size: int | None = None, device: str = "auto", force: bool = False, progress: bool = True,
            weights: str = "best", samples: int = MAHALANOBIS_SAMPLES,
            cache: str | os.PathLike | None = None) -> Path:
    """Write the maps of split ``split`` of ``dataset_root`` with ``RUN/<weights>.pt`` to ``out`` (see
    module docstring); returns ``out``. Prints seconds per volume. ``cache``: folder of the prepared cache
    instead of ``<dataset>/prepared`` (:func:`~mddpm.data.prepare.prepared_path`)."""
    run = Path(run).resolve()
    dataset_root = Path(dataset_root).resolve()
    if precision not in PRECISIONS:
        raise MddpmError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if score not in SCORES:
        raise MddpmError(f"--score {score!r}: expected one of {', '.join(SCORES)}")
    if score in SAMPLED_SCORES and t_fix is not None:
        raise MddpmError(f"--score {score} with --t-fix: choose one (a sampled score is not averaged over steps)")
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 2:
        raise MddpmError(f"--samples {samples!r}: must be an integer of at least 2")
    out = Path(out).resolve()
    device = resolve_device(device)
    method, payload = build_from_weights(RunFolder(run).weights(weights))
    cfg = payload["config"]
    noise_per = configure_method(method, noise_per, chunk_size)
    t_values = check_t_fix(method, t_fix)
    options = method.inference_settings()
    case_ids = [c.id for c in load_dataset(dataset_root).split(split)]
    if not case_ids:
        raise MddpmError(f"{dataset_root / 'dataset.json'}: split {split!r} is empty")
    request = {"weights": str(RunFolder(run).weights(weights)), "weights_step": payload["step"],
               "dataset": str(dataset_root),
               "split": split, "case_ids": case_ids, "precision": precision, "noise_per": noise_per,
               "t_fix": t_values, "score": score, "chunk_size": chunk_size, "device": str(device)}
    if score in SAMPLED_SCORES:
        request["samples"] = samples
    resumed, earlier = _resumable(out, request, force)
    if resumed is None:
        earlier = check_output_folder(out, force, _own_files(out, case_ids))
    prepared = load_prepared(prepare_dataset(dataset_root, get_grid(cfg["data"]["grid"]), progress=progress,
                                             cache=cache))
    method.to(device)

    clear_outputs(out, earlier)
    write_json(out / STARTED, request)
    todo = [c for c in case_ids if c not in (resumed or ())]
    seconds = []
    with sigterm_raises():  # an atomic write cut short by SIGTERM removes its temporary file
        _score_cases(method, prepared, todo, out, cfg["train"]["seed"], score, t_values, precision, device,
                     f"predict {split}", progress, seconds, samples)

    settings = {
        "weights": str(RunFolder(run).weights(weights)), "weights_step": payload["step"], "precision": precision,
        "noise_per": noise_per, "t_fix": t_values or (None if options.get("t_fix") is None else [options["t_fix"]]),
        "score": score, "chunk_size": options.get("chunk_size"),
        "device": str(device), "seed": cfg["train"]["seed"], "seeding": "per case: (train.seed, crc32(case id))",
        "seconds_per_volume": float(np.mean(seconds)) if seconds else None,
        "seconds_per_volume_first": seconds[0] if seconds else None, "resumed_cases": len(case_ids) - len(todo),
        "mddpm_version": __version__,
    }
    if score == "ssim-l1":
        settings["ssim"] = {"alpha": SSIM_L1_ALPHA, "window": SSIM_WINDOW, "sigma": SSIM_SIGMA}
    if score in SAMPLED_SCORES:
        settings["mahalanobis"] = {"samples": samples, "eps": MAHALANOBIS_EPS}
    write_json(out / "predict.json", {"prepared": str(prepared.folder.resolve()), "dataset": str(dataset_root),
                                      "split": split, "case_ids": case_ids, "run": str(run), "config": cfg,
                                      "settings": settings})
    (out / STARTED).unlink()
    steady = f", {np.mean(seconds[1:]):.3f} s after the first" if len(seconds) > 1 else ""
    timing = f": {np.mean(seconds):.3f} s/volume{steady}" if seconds else ""
    again = f" (resumed: {len(case_ids) - len(todo)} were already done)" if resumed is not None else ""
    say(f"predicted {len(todo)} volumes on {device}{timing}{again}; maps in {out}")
    return out


def _score_cases(method: AnomalyMethod, prepared, case_ids: list[str], out: Path, seed: int, score: str,
                 t_values: list[int] | None, precision: str, device: torch.device, description: str, progress: bool,
                 seconds: list[float], samples: int = MAHALANOBIS_SAMPLES) -> None:
    """Write the map and reconstruction of each case; the seconds each volume took are appended to ``seconds``."""
    for case_id in track(case_ids, description, progress):
        image, mask, _ = prepared.volume(case_id)
        # a copy: the cache is read-only
        x = torch.from_numpy(np.array(image, dtype=np.float32)).unsqueeze(1).to(device)
        m = torch.from_numpy(np.array(mask, dtype=np.float32)).unsqueeze(1).to(device)
        start = time.perf_counter()
        amap, recon = score_volume(method, x, m, case_generator(seed, case_id, device), score, t_values, precision,
                                   samples)
        amap, recon = amap[:, 0].cpu().numpy(), recon[:, 0].cpu().numpy()  # [Z, H, W]; waits for the device
        seconds.append(time.perf_counter() - start)
        affine = prepared.affines[prepared.index(case_id)]
        # the reconstruction first: a map on disk means its case is complete (each file is written atomically)
        write_nifti(case_file(out, case_id, ".nii.gz", "recon"), recon.transpose(1, 2, 0), affine)
        write_nifti(case_file(out, case_id, ".nii.gz"), amap.transpose(1, 2, 0), affine)


def _resumable(out: Path, request: dict, force: bool) -> tuple[set[str] | None, list[Path]]:
    """``(cases already done, leftover temporary files)`` when ``out`` holds an interrupted prediction of the
    same request (and nothing else), else ``(None, [])``. Without ``force`` another interrupted prediction
    is refused."""
    if force or (out / "predict.json").exists() or not (out / STARTED).is_file():
        return None, []
    try:
        started = read_json(out / STARTED)
    except MddpmError:
        started = None
    if started != request:
        raise MddpmError(f"{out}: holds an interrupted prediction with other settings (see {STARTED}); "
                         "use --force to start it again")
    files = check_output_folder(out, True, _own_files(out, request["case_ids"]))  # refuses foreign files
    leftovers = [f for f in files if f.name.startswith(".") and ".tmp" in f.name]  # of a killed atomic write
    return {c for c in request["case_ids"] if case_file(out, c, ".nii.gz").is_file()}, leftovers


def _own_files(out: Path, case_ids: list[str]) -> list[str]:
    """What predict writes into ``out`` for ``case_ids``, and what an earlier predict.json (or the request
    of an interrupted prediction) says it wrote (``--force`` removes those and refuses anything else)."""
    ids = set(case_ids)
    for name in ("predict.json", STARTED):
        try:
            earlier = read_json(out / name).get("case_ids", []) if (out / name).is_file() else []
        except MddpmError:
            earlier = []
        ids |= {str(c) for c in (earlier if isinstance(earlier, list) else [])}
    names = [glob.escape(f"{c}.nii.gz") for c in sorted(ids)]
    return ["predict.json", STARTED, *names, *(f"recon/{n}" for n in names)]
