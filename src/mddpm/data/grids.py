"""The model grids: a centred crop of the brain in mm resampled to isotropic voxels, by name (``paper``:
96x96x50 at 2 mm as published; ``demo``: 48x48x25 at 4 mm, the CPU scale), and the folder tag of a cache."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from mddpm.errors import MddpmError


@dataclass(frozen=True)
class GridSpec:
    """The model grid: centred crop of ``crop_mm`` (x, y, z) resampled to ``spacing_mm`` voxels."""

    crop_mm: tuple[float, float, float] = (192.0, 192.0, 100.0)
    spacing_mm: float = 2.0
    curvature_flow: bool = True
    percentiles: tuple[float, float] = (1.0, 99.0)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid size (H, W, Z) in voxels: ceil(crop / spacing)."""
        return tuple(math.ceil(c / self.spacing_mm - 1e-6) for c in self.crop_mm)

    @property
    def tag(self) -> str:
        """Folder name, e.g. ``"96x96x50"``; non-default crop, smoothing or percentiles add a suffix."""
        tag = "x".join(str(s) for s in self.shape)
        if tuple(self.crop_mm) != GridSpec.crop_mm:
            tag += "-crop" + "x".join(f"{c:g}" for c in self.crop_mm)
        if not self.curvature_flow:
            tag += "-nocf"
        if tuple(self.percentiles) != GridSpec.percentiles:
            tag += "-p{:g}-{:g}".format(*self.percentiles)
        return tag

    def settings(self) -> dict:
        """JSON-able description (stored in ``prepared.json``)."""
        return {"crop_mm": [float(c) for c in self.crop_mm], "spacing_mm": float(self.spacing_mm),
                "curvature_flow": bool(self.curvature_flow), "percentiles": [float(p) for p in self.percentiles],
                "shape": list(self.shape)}


GRIDS: dict[str, GridSpec] = {
    "paper": GridSpec(),  # 96 x 96 x 50 at 2 mm, as published
    "demo": GridSpec(spacing_mm=4.0),  # 48 x 48 x 25 at 4 mm: CPU demo trains in minutes
}


def get_grid(grid: str | GridSpec) -> GridSpec:
    """A :class:`GridSpec` from a name in :data:`GRIDS` (or the spec itself)."""
    if isinstance(grid, GridSpec):
        return grid
    if grid not in GRIDS:
        raise MddpmError(f"unknown grid {grid!r} (known: {', '.join(GRIDS)})")
    return GRIDS[grid]


def replace_grid(grid: str | GridSpec, **changes) -> GridSpec:
    """A copy of ``grid`` with some fields changed (e.g. ``curvature_flow=False``)."""
    return dataclasses.replace(get_grid(grid), **changes)
