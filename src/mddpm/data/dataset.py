"""The dataset format (see docs/dataset-format.md) and its loader.

A dataset is a folder with ``dataset.json``::

    {"format": "mddpm-dataset", "format_version": 1,
     "name": str, "modality": "T2",
     "geometry": {"space": str, "spacing_mm": [x, y, z], "shape": [X, Y, Z] | null},
     "cases": [{"id": str, "role": "healthy" | "anomalous", "group": str | null,
                "image": path, "mask": path, "label": path | null}, ...],
     "splits": {"train": [ids], "val": [ids], "test": [ids], "<set>_val": [ids], "<set>_test": [ids], ...},
     "folds": [{"train": [ids], "val": [ids]}, ...],          # optional k folds of the healthy data
     "label_encoding": "binary" | "gt0",                     # "gt0": labels binarised with > 0
     "provenance": [{"step": str, "tool": str, "settings": {...}}, ...]}

Paths are relative to the dataset folder, or absolute (an imported dataset references files in
place). Images are ``images/<id>_0000.nii.gz``, brain masks ``masks/<id>.nii.gz`` and lesion
masks ``labels/<id>.nii.gz`` (nnU-Net-like naming).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mddpm.data.schema import FORMAT, FORMAT_VERSION, check_structure
from mddpm.errors import InputError, NotFoundError
from mddpm.io import write_json

VAL_SEED = 3141  # the published seed
VAL_RULE = ("val: round(20 %) of the healthy cases (at least 1; none from fewer than 2), the first of "
            f"numpy.random.default_rng({VAL_SEED}).permutation(sorted case ids); train: the others")


def validation_split(ids: list[str]) -> tuple[list[str], list[str]]:
    """``(train, val)`` of the healthy case ``ids`` by :data:`VAL_RULE` (a fifth, as one fold of a 5-fold
    split); both keep the order of ``ids``."""
    if len(ids) < 2:
        return list(ids), []
    chosen = set(np.random.default_rng(VAL_SEED).permutation(sorted(ids))[:max(1, round(len(ids) / 5))].tolist())
    return [i for i in ids if i not in chosen], [i for i in ids if i in chosen]


@dataclass
class Case:
    id: str
    role: str  # "healthy" | "anomalous"
    image: Path
    mask: Path
    label: Path | None = None
    group: str | None = None  # e.g. "tumour", "ms" for synthetic anomalies, or the source dataset


@dataclass
class Dataset:
    root: Path
    meta: dict
    cases: dict[str, Case] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.meta.get("name", self.root.name)

    @property
    def splits(self) -> dict[str, list[str]]:
        return self.meta.get("splits", {})

    @property
    def folds(self) -> list[dict[str, list[str]]]:
        return self.meta.get("folds", [])

    def split(self, name: str, fold: int | None = None) -> list[Case]:
        """Cases of split ``name``; with ``fold``, ``train``/``val`` come from ``folds[fold]``."""
        if fold is not None and name in ("train", "val"):
            if not 0 <= fold < len(self.folds):
                raise InputError(f"{self.root / 'dataset.json'}: no fold {fold} (dataset has {len(self.folds)} folds)")
            ids = [str(i) for i in self.folds[fold][name]]
        elif name in self.splits:
            ids = [str(i) for i in self.splits[name]]
        else:
            raise InputError(f"{self.root / 'dataset.json'}: no split {name!r} (known: "
                             f"{', '.join(sorted(self.splits))})")
        missing = [i for i in ids if i not in self.cases]
        if missing:
            raise InputError(f"{self.root / 'dataset.json'}: split {name!r} names unknown cases {missing[:5]}")
        return [self.cases[i] for i in ids]


def load_dataset(root: str | Path) -> Dataset:
    """Load ``root/dataset.json`` with the structural checks of ``mddpm verify``
    (:mod:`mddpm.data.schema`): its first error raises :class:`~mddpm.errors.NotFoundError`
    (no dataset folder or dataset.json) or :class:`~mddpm.errors.InputError`. File-level checks
    (shapes, affines, values) are left to the readers of each file and to ``mddpm verify``."""
    root = Path(root)
    structure = check_structure(root)
    if structure.errors:
        first = structure.errors[0]
        kind = NotFoundError if first.code in ("missing-dataset", "missing-file") else InputError
        raise kind(f"{first.where}: {first.message}" + (f" [case {first.case}]" if first.case else ""))
    ds = Dataset(root=root, meta=structure.meta)
    for e in structure.entries:
        ds.cases[e.id] = Case(id=e.id, role=e.role, image=e.image, mask=e.mask, label=e.label, group=e.group)
    return ds


def save_dataset_json(root: str | Path, meta: dict) -> None:
    """Write ``root/dataset.json`` atomically, stamping the format fields."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    write_json(Path(root) / "dataset.json", meta)
