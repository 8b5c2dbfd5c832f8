"""Where methods are registered: each with a one-line description and presets. It only stores: a method
module registers itself with :func:`register_method`, and :mod:`mddpm.methods` (which imports every
method module, the list of methods) answers :func:`~mddpm.methods.get_method`. A method's presets are
data: the package file ``mddpm/presets/<name>.yaml`` (:func:`read_presets`).
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    ``build(model_cfg: dict) -> AnomalyMethod`` makes the module; ``presets`` maps a preset name
    (``"paper"``, ``"demo"``, ...) to ``{"model": {...}, "train": {...}}`` settings that override
    the generic defaults of :mod:`mddpm.config`.
    """

    name: str
    description: str
    build: Callable
    presets: dict = field(default_factory=dict)
    reference: str = ""
    ignored_settings: Callable | None = None  # model config -> {model key it makes ineffective: why}


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, description: str, presets: dict | None = None, reference: str = "",
                    ignored_settings: Callable | None = None):
    """Decorator: register ``build(model_cfg) -> AnomalyMethod`` under ``name``; ``presets``: default
    :func:`read_presets` of ``name``; ``ignored_settings(model_cfg) -> {key: why}``: the model settings
    that have no effect under the others (refused when a user sets them)."""

    def deco(build):
        from mddpm.io import case_id_problem  # here: building the command line's parser imports this module

        problem = case_id_problem(name, "method names")
        if problem:
            raise ValueError(f"method name {name!r} {problem}")
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name] = MethodSpec(name, description, build, read_presets(name) if presets is None else presets,
                                   reference, ignored_settings)
        return build

    return deco


def read_presets(name: str) -> dict:
    """``{preset: {"about", "model", "train", "data"}}`` from the package file ``mddpm/presets/<name>.yaml``."""
    import yaml

    text = importlib.resources.files("mddpm").joinpath("presets", f"{name}.yaml").read_text()
    presets = yaml.safe_load(text)
    if not isinstance(presets, dict) or not all(isinstance(p, dict) for p in presets.values()):
        raise ValueError(f"mddpm/presets/{name}.yaml: expected a mapping of preset names to settings")
    return presets
