"""Exported weights: ``RUN/best.pt`` and ``RUN/last.pt``, plain data that loads with ``weights_only=True``.

A weights file is ``torch.save`` of::

    {"format": "mddpm-weights", "format_version": 1, "mddpm_version": str,
     "method": str,                 # registered method name
     "config": {...},               # the resolved config (mddpm.config) the weights were trained with
     "state_dict": {name: tensor},  # the method module's state_dict (CPU tensors)
     "step": int,                   # optimiser steps trained
     "val_loss": float | None}      # validation loss at that step (None if never validated)

Lightning's own ``checkpoints/*.ckpt`` (optimiser state, loop progress) exist only to resume training.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import torch

from mddpm._version import __version__
from mddpm.config import build_method, validate_config
from mddpm.errors import ConfigError, MddpmError, NotFoundError, first_line
from mddpm.io import atomic_write

FORMAT = "mddpm-weights"
FORMAT_VERSION = 1
_KEYS = ("method", "config", "state_dict", "step", "val_loss")


def save_weights(path: str | os.PathLike, method_name: str, config: dict, state_dict: dict,
                 step: int, val_loss: float | None) -> Path:
    """Write a weights file (see module docstring) atomically; tensors are moved to the CPU."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mddpm_version": __version__,
        "method": method_name,
        "config": config,
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        "step": int(step),
        "val_loss": None if val_loss is None else float(val_loss),
    }
    path = Path(path)
    buffer = io.BytesIO()  # serialised in memory: a full disk is an OSError of the write, not a torch traceback
    torch.save(payload, buffer)
    with atomic_write(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return path


def read_torch_file(path: Path):
    """``torch.load`` with ``weights_only=True``; one line naming ``path`` for anything else than a torch file
    of plain data and tensors (random bytes, a truncated file, a crafted or foreign pickle)."""
    if not zipfile.is_zipfile(path):
        raise MddpmError(f"{path}: not a PyTorch file (truncated, overwritten or another format)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise MddpmError(f"{path}: refused to load: its pickle is not plain data and tensors (a damaged file, or a "
                         "crafted or foreign one)") from None
    except Exception as e:  # a damaged archive, ...
        if "hasRecord" in str(e) or "PytorchStreamReader" in str(e):  # torch's words for a zip it did not write
            raise MddpmError(f"{path}: not a PyTorch file (a zip archive without PyTorch's layout, or a damaged "
                             "one)") from None
        raise MddpmError(f"{path}: cannot read as a PyTorch file ({first_line(e)})") from None


def load_weights(path: str | os.PathLike, method: str | None = None) -> dict:
    """Read and validate a weights file; with ``method``, require weights of that method.

    Loads with ``weights_only=True``: a file that needs arbitrary unpickling (a crafted pickle, a
    Lightning ``.ckpt``) is refused with :class:`MddpmError`, as is another format or format version.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: weights file not found")
    payload = read_torch_file(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MddpmError(f"{path}: not an mddpm weights file (no \"format\": {FORMAT!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise MddpmError(f"{path}: weights format version {payload.get('format_version')!r} written by mddpm "
                         f"{payload.get('mddpm_version')} is not readable by mddpm {__version__} "
                         f"(expects version {FORMAT_VERSION})")
    missing = [k for k in _KEYS if k not in payload]
    if missing:
        raise MddpmError(f"{path}: weights file lacks {', '.join(missing)}")
    if method is not None and payload["method"] != method:
        raise MddpmError(f"{path}: weights of method {payload['method']!r}, expected {method!r}")
    return payload


def build_from_weights(path: str | os.PathLike, method: str | None = None):
    """Build the method of a weights file and load its parameters: ``(module (eval mode), payload)``."""
    payload = load_weights(path, method)
    try:  # a crafted file is refused as a crafted --set would be
        if not isinstance(payload["config"], dict) or payload["config"].get("method") != payload["method"]:
            raise ConfigError(f"its method is not {payload['method']!r}")
        validate_config(payload["config"])
        module = build_method(payload["config"])
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise MddpmError(f"{path}: its stored config is not valid ({first_line(e)})") from None
    try:
        module.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise MddpmError(f"{path}: weights do not fit the {payload['method']!r} model built from their config "
                         f"({first_line(e)})") from None
    return module.eval(), payload
