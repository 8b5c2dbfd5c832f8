"""Anomaly-detection methods: each composes nets, noise, diffusion and masking into a loss and a reconstruction.

This package owns the list of methods: importing it imports every module of the package (``base``, the
contract, included), and each method module registers its methods (:func:`mddpm.registry.register_method`).
A new method is one module here and one preset file ``mddpm/presets/<name>.yaml``; the contract test
(``tests/methods/test_contract.py``) then runs it through building, a training step, a map, and saving and
loading its weights.
"""

from __future__ import annotations

import importlib
import pkgutil

from mddpm.errors import ConfigError
from mddpm.registry import METHODS, MethodSpec

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"mddpm.methods.{_module}")  # each registers its methods


def all_methods() -> dict[str, MethodSpec]:
    """Every registered method by name (those of the modules above, and any registered since)."""
    return dict(METHODS)


def get_method(name: str) -> MethodSpec:
    """The registered method ``name``, or a one-line :class:`ConfigError` listing the known ones."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r} (known: {', '.join(sorted(METHODS))})")
    return METHODS[name]
