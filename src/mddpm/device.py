"""The one place a ``--device`` value becomes a torch device."""

from __future__ import annotations

import torch

from mddpm.errors import MddpmError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA device if there is one, else the CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"``
    as given, refused in one line when unknown or when CUDA is asked for and absent."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as e:
        raise MddpmError(f"--device {device!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MddpmError(f"--device {device}: no CUDA device is available")
    return device
