"""mddpm: unsupervised lesion detection in brain MRI with masked diffusion models.

The Python API (docs/api.md) is imported on first use, so ``import mddpm`` loads neither torch nor Lightning:
``load``, ``Detector``, ``Detection``, ``train``, ``predict``, ``evaluate`` and ``run_benchmark`` (the
``mddpm benchmark`` command; ``mddpm.benchmark`` is the module of that name).
"""

from mddpm._version import __version__

_API = {"load": "load", "Detector": "Detector", "Detection": "Detection", "train": "train", "predict": "predict",
        "evaluate": "evaluate", "run_benchmark": "benchmark"}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module("mddpm.api"), _API[name])
    raise AttributeError(f"module 'mddpm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
