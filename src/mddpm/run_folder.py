"""The run folder: what ``mddpm train`` writes and ``predict``, ``detect``, the demo, the benchmark
and the report read. One place for its layout::

    RUN/config.json                 the resolved config, plus dataset, fold and prepared cache
    RUN/best.pt, RUN/last.pt        weights (mddpm.weights) at the best validation loss / the end
    RUN/checkpoints/{best,last}.ckpt  Lightning checkpoints (to resume training)
    RUN/logs/csv/metrics.csv        train/loss, train/lr and val/loss per step (Lightning's CSVLogger)
    RUN/logs/tb/, ...               the other loggers' files (``--logger``; :mod:`mddpm.training.loggers`)
    RUN/threshold.json              a threshold for ``mddpm detect`` (``evaluate --publish`` puts it there)
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

# what a run folder holds, each at its own depth (``--force`` removes only these; mddpm.io.matches): the logs are
# those of mddpm.training.loggers (csv, tensorboard; mlflow's default store; wandb's folder, written by wandb)
RUN_FILES = ("config.json", "best.pt", "last.pt", "threshold.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt",
             "logs/csv/metrics.csv", "logs/csv/hparams.yaml", "logs/tb/hparams.yaml", "logs/tb/events.out.tfevents.*",
             "logs/mlflow.db", "logs/mlartifacts/**", "logs/wandb/**", "logs/tracking.json")
LOSSES = ("train/loss", "val/loss")


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder (nothing is read or created by building one)."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    def weights(self, which: str = "best") -> Path:
        """``best.pt`` or ``last.pt``."""
        return self.root / f"{which}.pt"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, which: str = "last") -> Path:
        """Lightning's ``checkpoints/best.ckpt`` or ``checkpoints/last.ckpt``."""
        return self.checkpoints / f"{which}.ckpt"

    @property
    def threshold(self) -> Path:
        return self.root / "threshold.json"

    @property
    def tracking(self) -> Path:
        """``logs/tracking.json``: the MLflow run the training logged to (:mod:`mddpm.training.loggers`)."""
        return self.root / "logs" / "tracking.json"

    @property
    def loss_log(self) -> Path:
        return self.root / "logs" / "csv" / "metrics.csv"

    def read_losses(self) -> dict[str, list[tuple[int, float]]] | None:
        """``{"train/loss": [(step, value), ...], "val/loss": [...]}`` from the loss log (steps done, as
        in the config); None when there is no log or it holds no loss."""
        if not self.loss_log.is_file():
            return None
        losses: dict[str, list[tuple[int, float]]] = {name: [] for name in LOSSES}
        with open(self.loss_log, newline="") as f:
            for row in csv.DictReader(f):
                for name in LOSSES:
                    if row.get(name) not in (None, "") and row.get("step") not in (None, ""):
                        losses[name].append((int(row["step"]) + 1, float(row[name])))
        return losses if any(losses.values()) else None
