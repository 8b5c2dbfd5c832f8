"""Configuration as data: method presets + generic training defaults + ``--set key=value``.

A resolved config is a plain JSON-able dict::

    {"mddpm_version": str, "method": str, "preset": str,
     "model": {...},            # keyword arguments of the method's builder
     "train": {...},            # generic training settings (TRAIN_DEFAULTS, overridden by the preset)
     "data": {...}}             # which prepared grid to train on (DATA_DEFAULTS, overridden by the preset)

It is saved as ``config.json`` beside every checkpoint and inside every metrics file.
"""

from __future__ import annotations

import copy
import json

from mddpm import __version__
from mddpm.errors import MddpmError
from mddpm.registry import get_method

TRAIN_DEFAULTS = {
    "batch_size": 32,  # slices (or volumes, for volume-wise methods) per optimiser step
    "lr": 1e-4,  # Adam learning rate
    "max_steps": 1000,  # optimiser steps
    "val_every": 250,  # steps between validations
    "val_batches": 8,  # batches per validation (fixed generator, so comparable across time)
    "seed": 3141,  # the published seed
    "precision": "32",  # "32" or "bf16" (bf16-mixed autocast where the device supports it)
    "log_every": 10,  # steps between logged training losses
    "bank_device": "auto",  # where the slice bank lives: "auto" (= the training device), "cpu"
}

DATA_DEFAULTS = {
    "grid": "paper",  # a name in mddpm.data.prepare.GRIDS: "paper" = 96x96x50 at 2 mm, "demo" = smaller
}


def resolve_config(method: str, preset: str, overrides: list[str] | tuple = ()) -> dict:
    """Resolve ``method`` + ``preset`` + overrides into a full config (see module docstring)."""
    spec = get_method(method)
    if preset not in spec.presets:
        raise MddpmError(f"method {method!r} has no preset {preset!r} (known: {', '.join(sorted(spec.presets))})")
    p = spec.presets[preset]
    unknown = set(p) - {"model", "train", "data", "about"}
    if unknown:
        raise ValueError(f"preset {method}/{preset} has unknown sections {sorted(unknown)}")
    train = _merge(TRAIN_DEFAULTS, p.get("train", {}), f"{method}/{preset} train")
    data = _merge(DATA_DEFAULTS, p.get("data", {}), f"{method}/{preset} data")
    cfg = {
        "mddpm_version": __version__,
        "method": method,
        "preset": preset,
        "model": copy.deepcopy(p.get("model", {})),
        "train": train,
        "data": data,
    }
    return apply_overrides(cfg, overrides)


def _merge(defaults: dict, values: dict, where: str) -> dict:
    out = dict(defaults)
    for k, v in values.items():
        if k not in out:
            raise ValueError(f"preset {where}: unknown key {k!r}")
        out[k] = v
    return out


def apply_overrides(cfg: dict, overrides) -> dict:
    """Apply ``section.key=value`` overrides; values parse as JSON, else stay strings.

    Unknown keys are rejected, and a value must keep the type of the value it replaces
    (an int may replace a float, and ``null`` may replace anything).
    """
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise MddpmError(f"--set {item!r}: expected key=value, e.g. train.lr=1e-4")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = cfg
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise MddpmError(f"--set {key}: unknown key")
            node = node[p]
        leaf = parts[-1]
        if leaf not in node or isinstance(node[leaf], dict) or node is cfg:
            raise MddpmError(f"--set {key}: unknown key (known: {', '.join(_leaf_keys(cfg))})")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        old = node[leaf]
        if old is not None and value is not None and not _same_kind(old, value):
            raise MddpmError(f"--set {key}={raw}: expected {type(old).__name__}, got {type(value).__name__}")
        node[leaf] = float(value) if isinstance(old, float) and isinstance(value, int) else value
    return cfg


def _same_kind(old, new) -> bool:
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        return not (isinstance(old, int) and isinstance(new, float))
    if isinstance(old, list) and isinstance(new, list):
        return True
    return type(old) is type(new)


def _leaf_keys(cfg: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        if k in ("mddpm_version", "method", "preset"):
            continue
        if isinstance(v, dict):
            out += _leaf_keys(v, f"{prefix}{k}.")
        else:
            out.append(prefix + k)
    return out


def build_method(cfg: dict):
    """Build the method module of a resolved config."""
    return get_method(cfg["method"]).build(cfg["model"])
