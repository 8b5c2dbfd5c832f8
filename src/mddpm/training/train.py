"""``train``: dataset + method + preset -> a run folder (its layout: :mod:`mddpm.run_folder`): the resolved
config, Lightning checkpoints (best val/loss and last, to resume), plain weights ``best.pt``/``last.pt`` and
the loggers' files.

Under DDP (``devices``/``num_nodes`` > 1, launched by Lightning, torchrun or SLURM) every process runs
this function; only global rank 0 checks and writes the run folder. ``train.batch_size`` is per process.

Resume is exact on the CPU: ``--resume`` after a finished run with a larger ``train.max_steps``, or after
Ctrl-C or SIGTERM (Lightning then saves ``checkpoints/last.ckpt``; the command line exits 130 or 143 with one
line), gives bit-identical weights to an uninterrupted run (tested), because every random draw is seeded from
the step number.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mddpm.config import (
    apply_overrides,
    apply_settings,
    build_method,
    given_keys,
    read_config_file,
    resolve_run_config,
    validate_config,
)
from mddpm.data.dataset import VAL_RULE, load_dataset, validation_split
from mddpm.data.grids import get_grid
from mddpm.data.prepare import prepare_dataset
from mddpm.errors import DiskFull, MddpmError, Terminated
from mddpm.folder_lock import FolderLock, refuse_input_as_output
from mddpm.io import check_output_folder, clear_outputs, read_json, refuse_links, write_json
from mddpm.messages import note, say
from mddpm.parallel import default_sigterm
from mddpm.progress import shows_progress, training_progress_bar
from mddpm.run_folder import RUN_FILES, RunFolder
from mddpm.training.loggers import Tracking, finish_tracking, make_loggers, parse_logger
from mddpm.training.module import AnomalyModule
from mddpm.weights import read_torch_file, save_weights

RUN_EXTRA_KEYS = ("dataset", "fold", "prepared")


def process_rank_is_zero() -> bool:
    """Whether this process is global rank 0 of a (possibly) distributed launch (env-based, before
    Lightning starts: RANK / SLURM_PROCID from torchrun or SLURM, LOCAL_RANK / NODE_RANK from Lightning)."""
    return all(os.environ.get(key, "0") == "0" for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"))


def default_run_dir(method: str, preset: str, fold: int | None) -> Path:
    return Path("runs") / (f"{method}-{preset}" + ("" if fold is None else f"-fold{fold}"))


def train(dataset_root: str | os.PathLike | None, method: str | None, preset: str | None = None,
          out: str | os.PathLike | None = None, fold: int | None = None, overrides=(), devices: int | str = 1,
          num_nodes: int = 1, accelerator: str = "auto", strategy: str = "auto", resume: bool = False,
          force: bool = False, progress: bool = True, config_file: str | os.PathLike | dict | None = None,
          loggers=(), workers: int = 2, cache: str | os.PathLike | None = None) -> Path:
    """Train ``method`` (``preset``, default ``mddpm.config.DEFAULT_PRESET``) on ``dataset_root`` into run
    folder ``out``.

    ``fold`` takes train/val from the dataset's ``folds[fold]``; ``config_file`` (YAML/JSON path or a
    mapping) and then ``overrides`` (``{"section.key": value}`` or ``section.key=value`` strings) change the preset
    (:func:`mddpm.config.resolve_run_config`); ``loggers``: ``--logger`` specs
    (:mod:`mddpm.training.loggers`); ``workers``: processes preparing the data (:func:`prepare_dataset`);
    ``cache``: folder of the prepared cache instead of ``<dataset>/prepared`` (:func:`prepared_path`).
    Without ``fold`` and a ``val`` split, validation cases are drawn from ``train`` (:func:`validation_split`,
    with a note). An existing ``out`` is refused unless ``force`` (which deletes the
    earlier run's files) or ``resume`` (which continues from ``out/checkpoints/last.ckpt``; the saved config
    is reused, with the config file and ``overrides`` applied on top, e.g. ``train.max_steps=...``).
    Returns the run folder.
    """
    if resume and force:
        raise MddpmError("--resume and --force exclude each other")
    rank_zero = process_rank_is_zero()
    if resume:
        if out is None:
            raise MddpmError("--resume needs the run folder (--out RUN)")
        run = Path(out).resolve()
        cfg, dataset_root, fold = _resume_config(run, dataset_root, method, preset, fold, overrides, config_file)
    else:
        if dataset_root is None:
            raise MddpmError("train needs a dataset (--data)")
        cfg = resolve_run_config(method, preset, config_file, overrides)
        run = Path(out or default_run_dir(cfg["method"], cfg["preset"], fold)).resolve()
    refuse_input_as_output(run, {"dataset": dataset_root, "cache folder": cache})
    with FolderLock(run) if rank_zero else contextlib.nullcontext():  # one writer per run folder
        return _train_into(run, cfg, dataset_root, fold, resume, force, rank_zero, devices, num_nodes, accelerator,
                           strategy, progress, loggers, workers, cache)


def _train_into(run: Path, cfg: dict, dataset_root, fold: int | None, resume: bool, force: bool, rank_zero: bool,
                devices, num_nodes: int, accelerator: str, strategy: str, progress: bool, loggers, workers: int,
                cache) -> Path:
    """The part of :func:`train` that writes ``run`` (under its lock)."""
    if resume:
        refuse_links(run, RUN_FILES)  # as --force does: a linked logs/ would take the run's writes elsewhere
    elif rank_zero:
        earlier = check_output_folder(run, force, RUN_FILES)
    for spec in loggers:
        parse_logger(spec)  # a bad --logger is refused before anything is prepared or written

    dataset_root = Path(dataset_root).resolve()
    dataset = load_dataset(dataset_root)
    train_ids = [c.id for c in dataset.split("train", fold)]
    if fold is None and "val" not in dataset.splits:
        train_ids, val_ids = validation_split(train_ids)
        if not val_ids:
            raise MddpmError(f"{dataset_root / 'dataset.json'}: no split 'val', and too few train cases "
                             f"({len(train_ids)}) to draw one from; add a 'val' split")
        if rank_zero:
            note(f"mddpm train: note: {dataset_root / 'dataset.json'} has no split 'val': validating on "
                 f"{len(val_ids)} of its {len(train_ids) + len(val_ids)} train cases ({VAL_RULE})")
    else:
        val_ids = [c.id for c in dataset.split("val", fold)]
    for name, ids in (("train", train_ids), ("val", val_ids)):
        if not ids:
            raise MddpmError(f"{dataset_root / 'dataset.json'}: split {name!r}"
                             f"{'' if fold is None else f' of fold {fold}'} is empty")
    prepared = Path(prepare_dataset(dataset_root, get_grid(cfg["data"]["grid"]), workers=max(1, workers),
                                    progress=progress, cache=cache)).resolve()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["train"]["seed"])  # parameter initialisation is reproducible too
        model = build_method(cfg)
    trainable = any(p.requires_grad for group in model.param_groups() for p in group) and cfg["train"]["max_steps"] > 0
    if trainable:  # made before anything is written: a bad --accelerator/--devices leaves no half run
        strategy = _ddp_strategy(strategy, devices, num_nodes, accelerator, len(model.param_groups()))
        trainer, timer = _make_trainer(cfg, run, devices, num_nodes, accelerator, strategy, progress,
                                       make_loggers(loggers, run))

    needed = run_bytes(model) if trainable else 0
    if rank_zero:
        replaced = earlier if force else [*run.glob("checkpoints/*.ckpt"), *run.glob("*.pt")] if resume else []
        if needed > shutil.disk_usage(run).free + sum(f.stat().st_size for f in replaced if f.is_file()):
            raise DiskFull(run, needed)
        if force:
            clear_outputs(run, earlier)
        try:
            run.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MddpmError(f"{run}: cannot create the run folder ({e.strerror})") from None
        write_json(RunFolder(run).config,
                   {**cfg, "dataset": str(dataset_root), "fold": fold, "prepared": str(prepared)})

    if not trainable:
        if rank_zero:  # nothing to optimise (e.g. a thresholding baseline): export the built model as is
            for which in ("best", "last"):
                save_weights(RunFolder(run).weights(which), cfg["method"], cfg, model.state_dict(), 0, None)
        return run

    module = AnomalyModule(model, cfg, str(prepared), train_ids, val_ids)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*Experiment logs directory .* exists and is not empty.*")
        warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")  # resume
        # batches are drawn from the step number, not the dummy loader, so mid-epoch resume is exact
        warnings.filterwarnings("ignore", ".*your dataloader is not resumable.*")
        warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")  # inside Lightning 2.6
        sigint = signal.getsignal(signal.SIGINT)
        try:
            with default_sigterm():  # Lightning's SIGTERM handling, not the command line's
                trainer.fit(module, ckpt_path=str(RunFolder(run).checkpoint("last")) if resume else None)
        except OSError as e:
            if e.errno == errno.ENOSPC:  # the disk filled up meanwhile (a checkpoint names a temporary file)
                raise DiskFull(run, needed) from None
            raise
        except SIGTERMException:  # a SystemExit with code None (exit 0): last.ckpt is saved by then
            raise Terminated(f"stopped by SIGTERM at step {trainer.global_step}; {run} continues with --resume"
                             ) from None
        except SystemExit:
            if not trainer.interrupted:
                raise
            # Ctrl-C: Lightning saved checkpoints/last.ckpt (save_on_exception) and exits with status 1
            raise KeyboardInterrupt(f"interrupted at step {trainer.global_step}; {run} continues with --resume"
                                    ) from None
        finally:
            signal.signal(signal.SIGINT, sigint)  # Lightning ignores a second Ctrl-C while it saves

    if rank_zero:
        export_weights(run)
        finish_tracking(trainer.loggers, run)
        if timer.steps:
            say(f"trained {timer.steps} steps (to step {timer.first_step + timer.steps}) in {timer.seconds:.1f} s "
                f"({timer.seconds / timer.steps:.4f} s/step); weights in {RunFolder(run).weights('best')}")
    return run


def run_bytes(model) -> int:
    """About what a training writes (bytes): two Lightning checkpoints (float32 weights and Adam's two
    moments) and two weight files, plus 1 MB of config and logs."""
    params = sum(p.numel() for group in model.param_groups() for p in group)
    return 2 * 3 * 4 * params + 2 * 4 * params + 2**20


def export_weights(run: Path) -> None:
    """Write ``RUN/best.pt`` and ``RUN/last.pt`` from the Lightning checkpoints (read with weights_only)."""
    folder = RunFolder(run)
    cfg = {k: v for k, v in read_json(folder.config).items() if k not in RUN_EXTRA_KEYS}
    for name in ("best", "last"):
        ckpt_path = folder.checkpoint(name)
        if not ckpt_path.is_file():
            raise MddpmError(f"{ckpt_path}: missing after training")
        ckpt = read_torch_file(ckpt_path)
        state = {k[len("method."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("method.")}
        save_weights(folder.weights(name), cfg["method"], cfg, state, ckpt["global_step"],
                     ckpt.get("mddpm", {}).get("val_loss"))


def _resume_config(run: Path, dataset_root, method, preset, fold, overrides, config_file=None):
    config_path, last = RunFolder(run).config, RunFolder(run).checkpoint("last")
    if not last.is_file():
        raise MddpmError(f"{last}: nothing to resume (no checkpoint)")
    ckpt = read_torch_file(last)  # a damaged checkpoint is one line here, not a traceback inside Lightning
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict) or "global_step" not in ckpt:
        raise MddpmError(f"{last}: not a Lightning checkpoint of a training run (no state_dict or global_step)")
    del ckpt
    saved = read_json(config_path)
    if not isinstance(saved.get("dataset"), str) or not isinstance(saved.get("fold", 0), (int, type(None))):
        raise MddpmError(f"{config_path}: not the config.json of a run (no dataset path or fold)")
    for key, given in (("method", method), ("preset", preset), ("fold", fold)):
        if given is not None and given != saved.get(key):
            raise MddpmError(f"{config_path}: run has {key} {saved.get(key)!r}, not {given!r}")
    if dataset_root is not None and Path(dataset_root).resolve() != Path(saved["dataset"]):
        raise MddpmError(f"{config_path}: run was trained on {saved['dataset']}, not {Path(dataset_root).resolve()}")
    chosen, settings, source = read_config_file(config_file) if config_file is not None else ({}, {}, "")
    for key, given in chosen.items():
        if given != saved.get(key):
            raise MddpmError(f"{source}{key} {given!r} differs from the run's {saved.get(key)!r}")
    cfg = apply_settings({k: v for k, v in saved.items() if k not in RUN_EXTRA_KEYS}, settings, source)
    cfg = apply_overrides(cfg, overrides)
    validate_config(cfg, given_keys(settings, overrides))
    return cfg, saved["dataset"], saved["fold"]


def _ddp_strategy(strategy: str, devices, num_nodes: int, accelerator: str, optimizers: int) -> str:
    """``"auto"`` with several processes and several optimisers (a GAN's critic step leaves the generator's
    parameters without gradients) -> DDP that tolerates unused parameters; anything else unchanged."""
    if strategy != "auto" or optimizers < 2:
        return strategy
    if devices == "auto":
        devices = torch.cuda.device_count() if accelerator != "cpu" and torch.cuda.is_available() else 1
    world = (devices if isinstance(devices, int) else len(devices)) * num_nodes
    return "ddp_find_unused_parameters_true" if world > 1 else strategy


def _make_trainer(cfg: dict, run: Path, devices, num_nodes: int, accelerator: str, strategy: str, progress: bool,
                  loggers: list):
    # Lightning's start-up chatter (device summary, an advert for its cloud logger) is INFO level
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    t = cfg["train"]
    best = ModelCheckpoint(dirpath=RunFolder(run).checkpoints, filename="best", monitor="val/loss", mode="min",
                           save_top_k=1, enable_version_counter=False, auto_insert_metric_name=False)
    # "last" is its own callback: at every validation, and on an exception or Ctrl-C
    last = ModelCheckpoint(dirpath=RunFolder(run).checkpoints, filename="last", monitor=None, save_top_k=1,
                           save_on_exception=True, enable_version_counter=False, auto_insert_metric_name=False)
    timer = StepTimer()
    progress = shows_progress(progress)
    try:
        trainer = L.Trainer(
            accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
            precision="bf16-mixed" if t["precision"] == "bf16" else "32-true",
            max_steps=t["max_steps"], max_epochs=-1,
            val_check_interval=t["val_every"], check_val_every_n_epoch=None, num_sanity_val_steps=0,
            log_every_n_steps=t["log_every"],
            logger=loggers,
            callbacks=[best, last, timer, Tracking()] + ([training_progress_bar()] if progress else []),
            default_root_dir=run, enable_progress_bar=progress, enable_model_summary=False,
        )
    except (MisconfigurationException, ValueError, RuntimeError) as e:
        raise MddpmError(f"--accelerator {accelerator} --devices {devices} --num-nodes {num_nodes}: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return trainer, timer


class StepTimer(Callback):
    """Wall-clock seconds spent in training steps (validation excluded) and how many ran. The device is
    synchronised only where a stretch of steps ends (a validation, the end of training), not per step."""

    def __init__(self):
        self.seconds = 0.0
        self.steps = 0
        self.first_step = 0
        self._start = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.first_step = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._start is None:
            _synchronize(pl_module.device)
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1

    def on_validation_start(self, trainer, pl_module) -> None:
        self._stop(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop(pl_module)

    def _stop(self, pl_module) -> None:
        if self._start is not None:
            _synchronize(pl_module.device)
            self.seconds += time.perf_counter() - self._start
            self._start = None


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
