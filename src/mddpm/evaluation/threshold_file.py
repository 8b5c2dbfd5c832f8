"""``threshold.json``: the threshold of an evaluation's default rule with its post-processing record.
``mddpm evaluate`` writes it (:func:`threshold_record`), :func:`publish_threshold` puts it into a run
folder, where ``mddpm detect`` finds it, and :func:`read_threshold_file` reads and checks it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mddpm.errors import InputError, NotFoundError
from mddpm.evaluation.postprocess import PostprocessSettings
from mddpm.folder_lock import FolderLock
from mddpm.io import read_json, write_json
from mddpm.run_folder import RunFolder


def threshold_record(threshold: float, rule: str, val_split: str, postprocess: PostprocessSettings) -> dict:
    """What ``threshold.json`` holds."""
    return {"threshold": threshold, "rule": rule, "val_split": val_split, "postprocess": postprocess.to_json()}


def read_threshold_file(path: str | os.PathLike) -> tuple[float, PostprocessSettings]:
    """``(threshold, post-processing)`` of a ``threshold.json``; a malformed file is one InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: threshold file not found")
    meta = read_json(path)
    value = meta.get("threshold")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise InputError(f"{path}: no finite numeric \"threshold\"")
    try:
        postprocess = PostprocessSettings.from_json(meta.get("postprocess"))
    except ValueError as e:
        raise InputError(f"{path}: malformed \"postprocess\" settings ({e}; expected the object `mddpm evaluate` "
                         "writes)") from None
    return float(value), postprocess


def run_to_publish_to(run: str | os.PathLike | None) -> RunFolder:
    """The run folder a threshold can be published to (``evaluate --publish`` asks before it evaluates);
    NotFoundError for no run or a folder without ``best.pt`` or ``config.json``."""
    folder = RunFolder(run if run is not None else "")
    if run is None or not (folder.weights("best").is_file() or folder.config.is_file()):
        raise NotFoundError(f"{run}: not a run folder (no best.pt or config.json); no threshold can be published "
                            "there")
    return folder


def publish_threshold(evaluation: str | os.PathLike, run: str | os.PathLike) -> Path:
    """Check the ``threshold.json`` of the evaluation folder ``evaluation`` and write it, atomically, as the
    run's threshold (``RUN/threshold.json``, what ``mddpm detect RUN`` uses) under the run's lock (a training
    still writing there refuses it). Returns the written path."""
    source = Path(evaluation) / "threshold.json"
    read_threshold_file(source)
    folder = run_to_publish_to(run)
    with FolderLock(folder.root):
        write_json(folder.threshold, read_json(source))
    return folder.threshold
