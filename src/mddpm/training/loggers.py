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
import urllib.parse
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from mddpm.config import parse_assignments
from mddpm.errors import ConfigError, MddpmError
from mddpm.io import read_json, write_json
from mddpm.messages import note
from mddpm.run_folder import RunFolder

DEFAULT_LOGGERS = ("csv", "tensorboard")
PACKAGES = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboard"}
PANEL_SLICES = 4


def parse_logger(spec: str) -> tuple[str, dict]:
    """``"mlflow:experiment_name=x,tracking_uri=file:/tmp/m"`` -> ``("mlflow", {"experiment_name": "x", ...})``."""
    name, _, rest = spec.partition(":")
    name = {"tb": "tensorboard"}.get(name.strip().lower(), name.strip().lower())
    usage = "expected NAME[:key=value,...], e.g. mlflow:experiment_name=brats"
    try:
        options = parse_assignments(filter(None, (part.strip() for part in rest.split(","))), "--logger", usage)
    except ConfigError:
        raise ConfigError(f"--logger {spec}: {usage}") from None
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
        allow_file_store(options.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI", ""))
        return MLFlowLogger(**{"experiment_name": "mddpm", "run_name": run.name, **options})
    return WandbLogger(**{"project": "mddpm", "name": run.name, "save_dir": str(logs), **options})


def allow_file_store(uri: str) -> None:
    """MLflow 3 refuses its file store (``file:/path/mlruns`` or a bare path) unless ``MLFLOW_ALLOW_FILE_STORE``
    is set: a store the user names is used as named, with a note that SQLite is the supported one."""
    if uri and uri != "databricks" and urllib.parse.urlparse(uri).scheme in ("", "file"):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE") != "true":
            note(f"note: {uri} is an MLflow file store, which MLflow keeps in maintenance mode; using it as asked "
                 "(MLFLOW_ALLOW_FILE_STORE=true). sqlite:///PATH/mlflow.db is the store MLflow supports")
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"


def finish_tracking(loggers: list[Logger], run: Path) -> None:
    """After training: the weights and config as artifacts of each MLflow run (``model/``), and where that run
    lives in ``RUN/logs/tracking.json``, so that ``evaluate --logger mlflow`` adds its metrics to it."""
    runs = {}
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            for path in (RunFolder(run).weights("best"), RunFolder(run).config):
                logger.experiment.log_artifact(logger.run_id, str(path), "model")
            runs["mlflow"] = {"tracking_uri": logger._tracking_uri, "run_id": logger.run_id,
                              "experiment_id": logger.experiment_id}
    if runs:
        write_json(RunFolder(run).tracking, runs)


def log_evaluation(specs, report: dict, out: Path) -> list[str]:
    """Send an evaluation's means over its test volumes (Dice per threshold rule, AUPRC, AUROC; keys
    ``eval/<test split>/<metric>``) to the trackers of ``specs`` (``--logger``): MLflow into the training run's
    own MLflow run when it recorded one (``RUN/logs/tracking.json``) and no store is named, else into a new run
    of the named store; TensorBoard into ``OUT/logs/tb``. csv needs nothing (``OUT/metrics.csv``). Returns one
    line per tracker saying where."""
    split = report["test"]["split"]
    agg = report["aggregate"]
    values = {f"eval/{split}/dice_{rule}": v["dice"]["mean"] for rule, v in agg["rules"].items()}
    values.update({f"eval/{split}/{k}": agg[k]["mean"] for k in ("auprc", "auroc") if k in agg})
    said = []
    for name, options in dict(parse_logger(s) for s in specs).items():
        if name == "mlflow":
            said.append(_log_mlflow(options, values, report, out))
        elif name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            with SummaryWriter(str(out / "logs" / "tb")) as writer:
                for key, value in values.items():
                    writer.add_scalar(key, value, 0)
            said.append(f"tensorboard: {out / 'logs' / 'tb'}")
        elif name == "wandb":
            raise ConfigError("--logger wandb: evaluate logs to mlflow and tensorboard (W&B: log metrics.json)")
    return said


def _log_mlflow(options: dict, values: dict, report: dict, out: Path) -> str:
    if importlib.util.find_spec("mlflow") is None:
        raise MddpmError("--logger mlflow: the 'mlflow' package is not installed (pip install mlflow)")
    from mlflow.tracking import MlflowClient

    tracking = RunFolder(report["test"].get("run") or "").tracking
    recorded = read_json(tracking).get("mlflow") if tracking.is_file() else None
    uri = options.get("tracking_uri") or (recorded or {}).get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError("--logger mlflow: the run trained without MLflow; name a store "
                          "(mlflow:tracking_uri=sqlite:////path/mlflow.db)")
    allow_file_store(uri)
    client = MlflowClient(uri)
    if recorded and recorded["tracking_uri"] == uri:
        run_id = recorded["run_id"]
    else:
        name = options.get("experiment_name", "mddpm")
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        run_id = client.create_run(experiment_id, run_name=out.name).info.run_id
    for key, value in values.items():
        client.log_metric(run_id, key, value)
    client.log_artifact(run_id, str(out / "metrics.json"), f"eval/{report['test']['split']}")
    return f"mlflow: run {run_id} in {uri}"


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
        picture = pl_module.val_panel  # an AnomalyModule's (training/module.py); None before a validation
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
