"""A maps folder written by ``mddpm predict``, opened and checked against the prepared cache it names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mddpm.data.cache import Prepared, load_prepared
from mddpm.data.verify import AFFINE_TOLERANCE_MM
from mddpm.errors import MddpmError
from mddpm.io import case_file, check_case_id, open_nifti, read_json, read_nifti


@dataclass
class MapsFolder:
    """A folder written by ``mddpm predict`` and the prepared cache it names."""

    folder: Path
    meta: dict
    prepared: Prepared
    case_ids: list[str]

    @property
    def split(self) -> str:
        return str(self.meta.get("split", "?"))

    def describe(self) -> dict:
        return {"maps": str(self.folder), "split": self.split, "prepared": str(self.prepared.folder),
                "dataset": self.meta.get("dataset"), "run": self.meta.get("run"), "cases": len(self.case_ids)}

    def load(self, case_id: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(anomaly map float32, brain mask bool, lesion label bool), each [Z, H, W] on ``device``."""
        path = self.folder / f"{case_id}.nii.gz"
        data, affine = read_nifti(path)
        _, mask, label = self.prepared.volume(case_id)
        score = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1)))
        if score.shape != mask.shape:
            raise MddpmError(f"{path}: map shape {tuple(data.shape)} does not match the prepared grid "
                             f"{tuple(np.transpose(mask, (1, 2, 0)).shape)} of {self.prepared.folder}")
        offset = np.abs(affine - self.prepared.affines[self.prepared.index(case_id)]).max()
        if offset > AFFINE_TOLERANCE_MM:
            raise MddpmError(f"{path}: affine differs from the prepared grid's by up to {offset:.4g} mm")
        return (score.to(device), torch.from_numpy(np.asarray(mask) > 0).to(device),
                torch.from_numpy(np.asarray(label) > 0).to(device))

    def reconstruction(self, case_id: str) -> np.ndarray | None:
        """The reconstruction [Z, H, W] if ``recon/<case>.nii.gz`` exists."""
        path = self.folder / "recon" / f"{case_id}.nii.gz"
        return read_nifti(path)[0].transpose(2, 0, 1) if path.is_file() else None


def open_maps(folder: str | Path, what: str) -> MapsFolder:
    """Open and check a maps folder: ``predict.json``, its prepared cache, every map's shape."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise MddpmError(f"{folder}: {what} maps folder not found")
    meta = read_json(folder / "predict.json")
    case_ids = meta.get("case_ids")
    if not isinstance(case_ids, list) or not case_ids or not isinstance(meta.get("prepared"), str):
        raise MddpmError(f"{folder / 'predict.json'}: needs 'prepared' and a non-empty 'case_ids' list")
    prepared_dir = Path(meta["prepared"])
    prepared = load_prepared(prepared_dir if prepared_dir.is_absolute() else folder / prepared_dir)
    grid_zhw = tuple(prepared.masks.shape[1:])
    expected = (grid_zhw[1], grid_zhw[2], grid_zhw[0])
    for cid in case_ids:
        path = case_file(folder, check_case_id(cid, folder / "predict.json"), ".nii.gz")
        prepared.index(cid)
        if not path.is_file():
            raise MddpmError(f"{path}: file not found (listed in {folder / 'predict.json'})")
        shape = tuple(open_nifti(path).shape)
        if shape[:3] != expected or any(s != 1 for s in shape[3:]):
            raise MddpmError(f"{path}: map shape {shape} does not match the prepared grid {expected} "
                             f"of {prepared.folder}")
    return MapsFolder(folder, meta, prepared, [str(c) for c in case_ids])
