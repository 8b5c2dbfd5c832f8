"""Experiment tracking for ``mddpm train --logger NAME[:key=value,...]``: Lightning's own loggers.

``csv`` (always on: the report's training curves read ``RUN/logs/csv/metrics.csv``) and ``tensorboard``
are the defaults; ``mlflow`` and ``wandb`` work when their package is installed (else one line saying
which package to install). ``key=value`` options go to the Lightning logger's constructor (values parse
as JSON, else stay strings), e.g. ``mlflow:tracking_uri=sqlite:////data/mlflow.db,experiment_name=brats``
(one store for many runs, to compare them; the default is ``$MLFLOW_TRACKING_URI`` or a store inside the run).
Every logger gets the resolved config as hyperparameters (flattened: ``model.net.model_channels``);
:class:`Tracking` sends one picture per validation to the loggers that take images.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from mddpm.errors import ConfigError, MddpmError

DEFAULT_LOGGERS = ("csv", "tensorboard")
PACKAGES = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboard"}
PANEL_SLICES = 4


def parse_logger(spec: str) -> tuple[str, dict]:
    """``"mlflow:experiment_name=x,tracking_uri=file:/tmp/m"`` -> ``("mlflow", {"experiment_name": "x", ...})``."""
    name, _, rest = spec.partition(":")
    name = {"tb": "tensorboard"}.get(name.strip().lower(), name.strip().lower())
    options = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--logger {spec}: expected NAME[:key=value,...], e.g. mlflow:experiment_name=brats")
        try:
            options[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip()] = raw
    if name not in ("csv", "tensorboard", "mlflow", "wandb"):
        raise ConfigError(f"--logger {spec}: unknown logger {name!r} (known: csv, tensorboard, mlflow, wandb)")
    return name, options


def make_loggers(specs, run: Path) -> list[Logger]:
    """Lightning loggers for ``specs`` (default :data:`DEFAULT_LOGGERS`; csv is always added), writing
    under ``run/logs`` unless their options say otherwise (an MLflow tracking URI, a W&B server)."""
    parsed = dict(parse_logger(s) for s in (specs or DEFAULT_LOGGERS))
    parsed.setdefault("csv", {})
    loggers = []
    for name, options in parsed.items():
        package = PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise MddpmError(f"--logger {name}: the {package!r} package is not installed (pip install {package})")
        try:
            loggers.append(_make(name, options, run))
        except TypeError as e:
            raise MddpmError(f"--logger {name}: {e}") from None
    return loggers


def _make(name: str, options: dict, run: Path) -> Logger:
    logs = run / "logs"
    if name == "csv":
        return CSVLogger(run, **{"name": "logs", "version": "csv", **options})
    if name == "tensorboard":
        return TensorBoardLogger(run, **{"name": "logs", "version": "tb", "default_hp_metric": False, **options})
    if name == "mlflow":  # default store: $MLFLOW_TRACKING_URI, else a SQLite file in the run (nothing in the cwd)
        if "tracking_uri" not in options and not os.environ.get("MLFLOW_TRACKING_URI"):
            options = {"tracking_uri": f"sqlite:///{logs / 'mlflow.db'}",
                       "artifact_location": (logs / "mlartifacts").as_uri(), **options}
        return MLFlowLogger(**{"experiment_name": "mddpm", "run_name": run.name, **options})
    return WandbLogger(**{"project": "mddpm", "name": run.name, "save_dir": str(logs), **options})


def flat_hparams(cfg: dict, prefix: str = "") -> dict:
    """The config as one flat mapping (``{"train.lr": 1e-3, ...}``); lists and None as JSON text."""
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return out


def panel(image: np.ndarray, recon: np.ndarray, amap: np.ndarray) -> np.ndarray:
    """A grey picture [3 H, n W] in [0, 1]: input slices (top row), reconstructions, anomaly maps scaled to
    their maximum; inputs [n, H, W] in [0, 1]. Axes as stored (rows = the slice's first axis)."""
    top = max(float(amap.max()), 1e-8)
    rows = [np.clip(image, 0, 1), np.clip(recon, 0, 1), np.clip(amap / top, 0, 1)]
    return np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0).astype(np.float32)


class Tracking(Callback):
    """At the start of training, the config into TensorBoard's HPARAMS table (bound to ``val/loss``, so runs
    compare by config and result); after each validation, the module's ``val_panel`` ([3 H, n W] from
    :func:`panel`) to every logger that takes images: TensorBoard (``val/panel``), MLflow (artifact
    ``val_panel/step_XXXXXXX.png``), W&B. Other loggers get the config from Lightning itself."""

    def on_fit_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        from torch.utils.tensorboard.summary import hparams

        params = dict(pl_module.hparams)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for summary in hparams(params, {"val/loss": 0.0}):  # the metric is read from the val/loss scalars
                    logger.experiment._get_file_writer().add_summary(summary)

    def on_validation_end(self, trainer, pl_module) -> None:
        picture = getattr(pl_module, "val_panel", None)
        if picture is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/panel", picture[None], step, dataformats="CHW")
            elif isinstance(logger, MLFlowLogger):
                logger.experiment.log_image(logger.run_id, (picture * 255).astype(np.uint8),
                                            f"val_panel/step_{step:07d}.png")
            elif isinstance(logger, WandbLogger):
                logger.log_image("val/panel", [picture], step=step)
