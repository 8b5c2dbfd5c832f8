"""Configuration as data: method presets + generic defaults + a config file + ``--set key=value``.

Resolution order (later wins): the generic defaults below, the method's preset (the package file
``mddpm/presets/<method>.yaml``), a config file (``--config``, YAML or JSON, the keys of ``--set``),
``--set``. :func:`validate_config` is the one place a config is checked: unknown keys and values of
the wrong type are refused while it is resolved, impossible ``train`` values and settings the chosen
method ignores (a masking's options without that masking) by :func:`validate_config`.

The default scale is the demo one (``DEFAULT_PRESET``, grid ``demo``: CPU-sized); ``--preset paper``
(grid ``paper``) is the published scale. Every run records its method and preset in config.json.

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
import os
from pathlib import Path

from mddpm._version import __version__
from mddpm.data.augment import AUGMENTS
from mddpm.errors import ConfigError, NotFoundError
from mddpm.methods import get_method

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
    "augment": "none",  # training augmentation: none (published), intensity, spatial, all (data/augment.py)
}

DEFAULT_PRESET = "demo"  # the preset of `mddpm train` without --preset
DATA_DEFAULTS = {
    "grid": "demo",  # a name in mddpm.data.grids.GRIDS: "paper" = 96x96x50 at 2 mm, "demo" = 48x48x25 at 4 mm
}
FILE_KEYS = ("method", "preset", "mddpm_version")  # top-level keys of a config file besides the sections


def resolve_config(method: str, preset: str, overrides: dict | list[str] | tuple = (), settings: dict | None = None,
                   source: str = "--config: ") -> dict:
    """Resolve ``method`` + ``preset`` + ``settings`` (``{"section.key": value}``, e.g. from a config file
    named by ``source``) + ``overrides`` (:func:`as_overrides`) into a full config (see module docstring)."""
    spec = get_method(method)
    if preset not in spec.presets:
        raise ConfigError(f"method {method!r} has no preset {preset!r} (known: {', '.join(sorted(spec.presets))})")
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
    cfg = apply_overrides(apply_settings(cfg, settings or {}, source), overrides)
    validate_config(cfg)
    return cfg


def _merge(defaults: dict, values: dict, where: str) -> dict:
    out = dict(defaults)
    for k, v in values.items():
        if k not in out:
            raise ValueError(f"preset {where}: unknown key {k!r}")
        out[k] = v
    return out


def parse_assignments(items, option: str, example: str, typed: bool = True, form: str = "KEY=VALUE") -> dict:
    """``["KEY=VALUE", ...]`` -> ``{KEY: VALUE}``, the one parser of every key=value option (``--set``,
    ``--logger`` options, ``--data``, ``--sbatch``). With ``typed`` a value is read as JSON where it parses
    (``6`` -> 6, ``null`` -> None) and stays a string where not; without, every value stays a string. A later key
    wins. Raises ConfigError naming ``option``, ``form`` and ``example``."""
    out = {}
    for item in items:
        key, eq, raw = str(item).partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"{option} {item!r}: expected {form}, e.g. {example}")
        try:
            out[key.strip()] = json.loads(raw) if typed else raw
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def as_overrides(overrides) -> dict:
    """Overrides as data: a ``{"section.key": value}`` dict as is, ``--set`` strings parsed."""
    if isinstance(overrides, dict):
        return dict(overrides)
    return parse_assignments(overrides, "--set", "train.lr=1e-4", form="key=value")


def apply_overrides(cfg: dict, overrides) -> dict:
    """Apply overrides (:func:`as_overrides`: a dict or ``section.key=value`` strings).

    Unknown keys are rejected, and a value must keep the type of the value it replaces
    (an int may replace a float, and ``null`` may replace anything).
    """
    return apply_settings(cfg, as_overrides(overrides), "--set ")


def apply_settings(cfg: dict, settings: dict, source: str) -> dict:
    """A copy of ``cfg`` with ``{"section.key": value}`` applied (rules of :func:`apply_overrides`); errors
    start with ``source`` (``"--set "`` or ``"FILE: "``), then the key."""
    cfg = copy.deepcopy(cfg)
    for key, value in settings.items():
        parts = key.split(".")
        node = cfg
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"{source}{key}: unknown key")
            node = node[p]
        leaf = parts[-1]
        if leaf not in node or isinstance(node[leaf], dict) or node is cfg:
            raise ConfigError(f"{source}{key}: unknown key (known: {', '.join(_leaf_keys(cfg))})")
        old = node[leaf]
        if isinstance(old, (int, float)) and not isinstance(old, bool) and isinstance(value, str):
            try:  # YAML 1.1 reads 1e-3 (no dot) as a string
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if old is not None and value is not None and not _same_kind(old, value):
            raise ConfigError(f"{source}{key}={json.dumps(value)}: expected {type(old).__name__}, "
                             f"got {type(value).__name__}")
        node[leaf] = float(value) if isinstance(old, float) and isinstance(value, int) else value
    return cfg


def read_config_file(config: str | os.PathLike | dict) -> tuple[dict, dict, str]:
    """``({"method", "preset"} given, {"section.key": value}, source)`` of a YAML or JSON config file (or of
    a mapping of the same shape, from the Python API): sections ``model``/``train``/``data`` as mappings
    (or dotted keys), optionally ``method`` and ``preset``; the output of ``mddpm train --print-config``
    is such a file. ``source`` starts error messages about it."""
    import yaml

    if isinstance(config, dict):
        raw, source = copy.deepcopy(config), "config: "
    else:
        path = Path(config)
        source = f"{path}: "
        if not path.is_file():
            raise NotFoundError(f"{path}: config file not found")
        try:
            raw = yaml.load(path.read_text(), Loader=_unique_keys_loader())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid YAML or JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}expected a mapping of settings (model:, train:, data:)")
    chosen = {k: raw.pop(k) for k in FILE_KEYS if k in raw}
    chosen.pop("mddpm_version", None)
    for key in ("method", "preset"):
        if key in chosen and not isinstance(chosen[key], str):
            raise ConfigError(f"{source}{key} must be a name")
    return chosen, _flatten(raw), source


def _unique_keys_loader():
    """YAML's safe loader that refuses a key given twice in one mapping (YAML would keep the last silently)."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice (line {key_node.start_mark.line + 1})",
                        key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeys


def given_keys(settings: dict, overrides) -> list[str]:
    """The keys a user set: those of a config file's ``settings`` and of the overrides."""
    return [*settings, *as_overrides(overrides)]


def resolve_run_config(method: str | None, preset: str | None, config=None, overrides=()) -> dict:
    """The validated config of a new run: ``method``/``preset`` (given, else the config file's, else
    :data:`DEFAULT_PRESET`), the file's settings, then ``overrides`` (``--set`` wins)."""
    chosen, settings, source = read_config_file(config) if config is not None else ({}, {}, "")
    method = method or chosen.get("method")
    if method is None:
        raise ConfigError("no method: pass --method or put method: in the --config file")
    cfg = resolve_config(method, preset or chosen.get("preset") or DEFAULT_PRESET, overrides, settings, source)
    validate_config(cfg, given_keys(settings, overrides))
    return cfg


def _flatten(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (mappings are sections, never values)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


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


# The range of every numeric setting, by its name (the last part of its key): (kind, low, high), with
# kind "int" or "float" and the bounds inclusive; None is allowed where a preset uses it (e.g. patch_size).
# The upper bounds are far above any published or demo setting, and far below what fails to allocate.
_INT_RANGES = {
    **dict.fromkeys(("base_channels", "encoder_base_channels", "model_channels", "head_channels", "groups",
                     "noise_res", "mask_cells"), (1, 4096)),
    **dict.fromkeys(("max_channels", "encoder_max_channels", "d_model"), (1, 8192)),
    **dict.fromkeys(("latent_dim", "ff_dim"), (1, 65536)),
    **dict.fromkeys(("depth", "num_down", "num_layers", "num_stages", "num_res_blocks"), (1, 64)),
    "num_heads": (1, 256), "bottleneck_reduction": (1, 1024), "chunk_size": (1, 2**20), "image_size": (8, 4096),
    "patch_size": (1, 4096), "timesteps": (2, 100_000), "t_fix": (0, 99_999), "n_critic": (1, 1000),
    "gan_steps": (0, 10**10), "cosine_steps": (0, 10**10),
    # train
    "batch_size": (1, 65536), "max_steps": (0, 10**10), "val_every": (1, 10**10), "val_batches": (1, 10**6),
    "log_every": (1, 10**10), "seed": (0, 2**63 - 1),
}
_FLOAT_RANGES = {
    **dict.fromkeys(("dropout",), (0.0, 0.99)), "lr": (1e-12, 10.0), "simplex_frequency": (1e-3, 1e6),
    **dict.fromkeys(("noise_std", "beta", "kappa", "gp_weight", "weight_decay"), (0.0, 1e6)),
}


def _check_ranges(tree: dict, prefix: str) -> None:
    """Refuse a numeric setting of ``tree`` (a config section) outside its range (:data:`_INT_RANGES`)."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _check_ranges(value, f"{name}.")
        elif value is not None and key in _INT_RANGES:
            low, high = _INT_RANGES[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"{name}={value!r}: must be an integer from {low} to {high}")
        elif value is not None and key in _FLOAT_RANGES:
            low, high = _FLOAT_RANGES[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"{name}={value!r}: must be a number from {low:g} to {high:g}")
    for key in ("mask_ratio", "adam_betas"):
        pair = tree.get(key)
        if pair is not None and not (isinstance(pair, list) and len(pair) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in pair)):
            raise ConfigError(f"{prefix}{key}={pair!r}: must be two numbers from 0 to 1")


def validate_config(cfg: dict, given=()) -> None:
    """Refuse impossible values (types and ranges of every numeric setting, the choices of ``train``), and any
    of the ``given`` keys (set by a config file or ``--set``) that the chosen method ignores under its other
    settings; one :class:`ConfigError` line naming the key. Also what a stored weights file's config passes."""
    for section in ("model", "train"):
        if not isinstance(cfg.get(section), dict):
            raise ConfigError(f"{section}: missing, or not a section of settings")
        _check_ranges(cfg[section], f"{section}.")
    t = {**TRAIN_DEFAULTS, **cfg["train"]}  # a weights file of an earlier version may lack a later setting
    if t["precision"] not in ("32", "bf16"):
        raise ConfigError(f"train.precision={t['precision']!r}: must be \"32\" or \"bf16\"")
    if t["bank_device"] not in ("auto", "cpu"):
        raise ConfigError(f"train.bank_device={t['bank_device']!r}: must be \"auto\" or \"cpu\"")
    if t["augment"] not in AUGMENTS:
        raise ConfigError(f"train.augment={t['augment']!r}: must be one of {', '.join(AUGMENTS)}")
    spec = get_method(cfg["method"])
    ignored = spec.ignored_settings(cfg["model"]) if spec.ignored_settings else {}
    for key in given:
        section, _, rest = key.partition(".")
        if section == "model" and rest.split(".")[0] in ignored:
            raise ConfigError(f"{key}: method {cfg['method']} ignores it ({ignored[rest.split('.')[0]]}); remove it")


def build_method(cfg: dict):
    """Build the method module of a resolved config."""
    return get_method(cfg["method"]).build(cfg["model"])
