"""The Python API (docs/api.md): score scans with a trained run, and the CLI's commands as functions.

``load(run)`` returns a :class:`Detector`; ``Detector.score(scan)`` takes a NIfTI path, a nibabel image or
an array with its affine (the scan in the run's template space, as for ``mddpm detect``) and returns a
:class:`Detection` on the scan's own voxel grid. ``train``, ``predict``, ``evaluate`` and ``benchmark``
take the keyword arguments of the ``mddpm`` command of the same name (long option names, ``-`` as ``_``).
Heavy modules (torch, Lightning) are imported on first use, so ``import mddpm`` stays fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mddpm.errors import ConfigError, InputError, MddpmError, NotFoundError

Volume = "str | os.PathLike | nibabel image | np.ndarray"


NO_THRESHOLD = ("no threshold: the run was loaded for anomaly maps only (no RUN/threshold.json); a segmentation "
                "needs one: mddpm.load(run, threshold=VALUE or PATH/threshold.json)")


@dataclass(repr=False)
class Detection:
    """What :meth:`Detector.score` returns, all on the scan's voxel grid.

    ``anomaly_map``: [X, Y, Z] float32, the post-processed anomaly score; ``affine``: the scan's 4x4
    voxel-to-world matrix (mm); ``threshold``: the run's (None when loaded without one); ``segmentation``:
    [X, Y, Z] bool, the map above ``threshold`` with small components removed; ``lesion_volume_ml``: its
    volume in millilitres. Without a threshold, asking for those two raises :class:`ConfigError`.
    ``unscored_fraction``: the share of the brain the model grid left out (NaN in ``anomaly_map`` there);
    ``unscored_slices``: the axial slices holding such voxels, as ``[first, last]`` ranges.
    ``reconstruction``: [X, Y, Z] float32, the model's reconstruction of the scan (intensities on the prepared
    data's normalised scale), NaN wherever the model grid does not reach; ``scan_score``: one anomaly score for
    the whole scan, the mean of the highest 1 % of ``anomaly_map`` over the scored brain voxels (NaN-aware;
    :func:`mddpm.inference.detect.scan_score_of`)."""

    anomaly_map: np.ndarray
    affine: np.ndarray
    threshold: float | None = None
    thresholded: np.ndarray | None = None  # the segmentation; None without a threshold
    unscored_fraction: float | None = None
    unscored_slices: list | None = None
    reconstruction: np.ndarray | None = None
    scan_score: float | None = None

    @property
    def segmentation(self) -> np.ndarray:
        if self.thresholded is None:
            raise ConfigError(NO_THRESHOLD)
        return self.thresholded

    @property
    def lesion_volume_ml(self) -> float:
        from mddpm.inference.detect import lesion_volume_ml

        return lesion_volume_ml(self.segmentation, self.affine)

    def __repr__(self) -> str:
        parts = [f"shape={self.anomaly_map.shape}"]
        if self.thresholded is None:
            parts.append("threshold=None (maps only)")
        else:
            parts += [f"threshold={self.threshold:.4g}", f"lesion_volume_ml={self.lesion_volume_ml:.1f}"]
        unscored = getattr(self, "unscored_fraction", None)
        if unscored:  # shown when some brain went unscored
            parts.append(f"unscored_fraction={unscored:.3f}")
        return f"Detection({', '.join(parts)})"

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``folder/anomaly_map.nii.gz`` and (with a threshold) ``folder/segmentation.nii.gz`` (uint8);
        returns ``folder``."""
        from mddpm.io import write_nifti

        folder = Path(folder)
        write_nifti(folder / "anomaly_map.nii.gz", self.anomaly_map.astype(np.float32), self.affine)
        if self.thresholded is not None:
            write_nifti(folder / "segmentation.nii.gz", self.thresholded.astype(np.uint8), self.affine)
        return folder


class Detector:
    """A trained run loaded once (from :func:`load`); :meth:`score` scores one scan at a time."""

    def __init__(self, loaded):
        self.loaded = loaded  # mddpm.inference.detect.LoadedRun

    @property
    def method(self) -> str:
        return self.loaded.payload["method"]

    @property
    def threshold(self) -> float | None:
        return self.loaded.threshold

    def __repr__(self) -> str:
        return f"Detector(run={str(self.loaded.run)!r}, method={self.method!r}, threshold={self.threshold})"

    def score(self, scan: Volume, mask: Volume | None = None, affine: np.ndarray | None = None,
              case_id: str | None = None) -> Detection:
        """Score ``scan``; ``mask``: its brain mask (same grid; default: ``scan > 0``, right for the
        skull-stripped output of ``mddpm preprocess``); ``affine``: needed when ``scan`` is an array;
        ``case_id``: seeds the test-time noise as ``predict`` seeds that case (default: from the file name of
        a path or a loaded nibabel image; an array without it is ``"scan"``)."""
        from mddpm.checks import check_binary_mask
        from mddpm.inference.detect import score_scan

        image, affine = as_volume(scan, affine, "scan")
        if mask is None:
            brain = image > 0
        else:
            brain_arr, mask_affine = as_volume(mask, affine, "mask")
            if brain_arr.shape != image.shape or not np.allclose(mask_affine, affine, atol=1e-3):
                raise InputError(f"mask: shape {brain_arr.shape} or affine differs from the scan's {image.shape}")
            brain = check_binary_mask(brain_arr, "mask")
        if not brain.any():
            raise InputError("mask: the brain mask is empty")
        result = score_scan(self.loaded, image, brain, affine, _name(scan), case_id)
        return Detection(result.anomaly_map, affine, self.loaded.threshold, result.segmentation, **result.coverage,
                         reconstruction=result.reconstruction, scan_score=result.scan_score)


def load(run: str | os.PathLike, *, threshold: float | str | os.PathLike | None = None, device: str = "auto",
         precision: str = "32", weights: str = "best") -> Detector:
    """Load ``RUN/<weights>.pt`` and its threshold: a number, a ``threshold.json``, or (None)
    ``RUN/threshold.json`` as ``mddpm detect`` does; a run without one is loaded for anomaly maps only.
    ``device``: auto, cpu, cuda...; ``precision``: 32, bf16."""
    from mddpm.inference.detect import load_run

    return Detector(load_run(run, threshold, device, precision, weights, require_threshold=False))


def as_volume(value: Volume, affine: np.ndarray | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(array [X, Y, Z] float32, affine [4, 4] float64)`` of a NIfTI path, a nibabel image or an array
    (which needs ``affine``); refused unless 3-D (a trailing axis of 1 is dropped) and finite."""
    from mddpm.checks import check_affine, check_real
    from mddpm.io import read_nifti

    if isinstance(value, (str, os.PathLike)):
        if not Path(value).exists():
            raise NotFoundError(f"{value}: {what} file not found")
        try:
            return read_nifti(value)
        except MddpmError as e:  # not NIfTI, not 3-D, NaN voxels
            raise InputError(str(e)) from None
    if hasattr(value, "dataobj") and hasattr(value, "affine"):  # a nibabel image
        data, affine = check_real(value.dataobj, what), value.affine
    else:
        if affine is None:
            raise InputError(f"{what}: an array needs its affine (4x4 voxel-to-world matrix in mm): pass affine=")
        data = check_real(value.detach().cpu() if hasattr(value, "detach") else value, what)
    affine = check_affine(affine, what)  # as a NIfTI file's header is checked
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{what}: expected a 3-D volume (got shape {data.shape})")
    if not np.isfinite(data).all():
        raise InputError(f"{what}: contains NaN or Inf voxels")
    return data, affine


def _name(value) -> str:
    """The path of a scan given as a path or a loaded nibabel image (its case id and its messages' name)."""
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    filename = value.get_filename() if hasattr(value, "get_filename") else None
    return str(filename) if filename else "scan"


def strings(value) -> list[str]:
    """The list of a list-valued option: one string is one item (not its characters), a sequence its items."""
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, os.PathLike)) else [str(v) for v in value]


def overrides(value) -> list[str]:
    """``--set`` strings from one ``"section.key=value"``, a sequence of them, or a mapping
    ``{"section.key": value}`` (values as JSON, so ``{"train.precision": "bf16"}`` stays a string)."""
    if isinstance(value, Mapping):
        return [f"{key}={json.dumps(v, default=str)}" for key, v in value.items()]
    return strings(value)


def train(data: str | os.PathLike | None = None, method: str | None = None, *, preset: str | None = None,
          config: str | os.PathLike | dict | None = None, set: str | list[str] | Mapping = (), out=None,
          fold: int | None = None, logger: str | list[str] = (), devices: int | str = 1, num_nodes: int = 1,
          accelerator: str = "auto", resume: bool = False, force: bool = False, progress: bool = True,
          workers: int = 1, cache: str | os.PathLike | None = None) -> Path:
    """``mddpm train``: train ``method`` on dataset folder ``data``; returns the run folder. ``set``: one
    ``"section.key=value"``, a list of them, or ``{"section.key": value}``; ``workers``: processes preparing
    the data (1: in this process, so a script needs no ``if __name__ == "__main__":`` guard); ``cache``: a
    folder for the prepared cache instead of ``data/prepared`` (a read-only or shared dataset)."""
    from mddpm.training.train import train as train_run

    return train_run(data, method, preset=preset, out=out, fold=fold, overrides=overrides(set), config_file=config,
                     loggers=strings(logger), devices=devices, num_nodes=num_nodes, accelerator=accelerator,
                     resume=resume, force=force, progress=progress, workers=workers, cache=cache)


def predict(run: str | os.PathLike, data: str | os.PathLike, split: str, out: str | os.PathLike, *,
            weights: str = "best", precision: str = "32", noise_per: str | None = None, t_fix=None,
            score: str = "l1", samples: int = 8, chunk_size: int | None = None, device: str = "auto",
            force: bool = False, progress: bool = True, workers: int = 1,
            cache: str | os.PathLike | None = None) -> Path:
    """``mddpm predict``: anomaly maps of ``split`` of dataset ``data`` in ``out``; returns ``out``.
    ``workers`` and ``cache``: as for :func:`train`."""
    from mddpm.inference.predict import predict as predict_split

    _prepare_for(run, data, workers, progress, cache)
    return predict_split(run, data, split, out, precision=precision, noise_per=noise_per, t_fix=t_fix, score=score,
                         samples=samples, chunk_size=chunk_size, device=device, force=force, progress=progress,
                         weights=weights, cache=cache)


def _prepare_for(run, data, workers: int, progress: bool, cache=None) -> None:
    """Prepare ``data`` on the grid of ``RUN/config.json`` with ``workers`` processes (predict then finds the
    cache ready); nothing without a readable config.json (predict then prepares the data itself)."""
    from mddpm.data.grids import get_grid
    from mddpm.data.prepare import prepare_dataset
    from mddpm.io import read_json
    from mddpm.run_folder import RunFolder

    try:
        grid = get_grid(read_json(RunFolder(run).config)["data"]["grid"])
    except (MddpmError, KeyError, TypeError):
        return
    prepare_dataset(data, grid, workers=max(1, workers), progress=progress, cache=cache)


def evaluate(test_maps: str | os.PathLike, val: str | os.PathLike, out: str | os.PathLike, *,
             rule: str | list[str] = (), healthy_val=None, figures: int = 0, examples: int = 0,
             pr_curve: bool = False, postprocess: str = "published", write_segmentations: bool = False,
             device: str = "cpu", force: bool = False, progress: bool = True) -> dict:
    """``mddpm evaluate``: metrics of the maps in ``test_maps``, thresholds chosen on ``val``; returns the
    report (what ``out/metrics.json`` holds)."""
    from mddpm.evaluation.evaluate import evaluate as evaluate_maps
    from mddpm.viz.cases import render_case_figure

    return evaluate_maps(test_maps, val, out, rules=strings(rule), healthy_val=healthy_val, figures=figures,
                         examples=examples, pr_curve=pr_curve, device=device, force=force, postprocess=postprocess,
                         progress=progress, write_segmentations=write_segmentations, draw_case=render_case_figure)


def benchmark(experiment: str | os.PathLike, *, out=None, data: dict | list[str] | None = None, resume: bool = True,
              dry_run: bool = False, runs: int | None = None, table_only: bool = False, only: list[str] | None = None,
              device: str = "auto", force: bool = False, report: bool = True, progress: bool = True,
              run: list[str] | None = None, executor: str = "inline", cluster=None, wait: bool = False) -> dict:
    """``mddpm benchmark``: run ``experiment`` (a file or a shipped name); ``data``: ``{name: path}`` or the
    CLI's ``["name=path", ...]``; ``run``: ``["METHOD/RUN", ...]`` as ``--run``; ``executor``: inline, local
    or slurm, with ``cluster`` a :class:`mddpm.benchmark.cluster.ClusterOptions`. Returns ``{"out", "table",
    ...}`` as :func:`mddpm.benchmark.runner.run_benchmark` does."""
    from mddpm.benchmark.experiment import parse_data_args
    from mddpm.benchmark.runner import run_benchmark

    data = dict(data) if isinstance(data, Mapping) else parse_data_args(strings(data))
    return run_benchmark(experiment, out=out, data=data, resume=resume, dry_run=dry_run, device=device,
                         only=None if only is None else strings(only), force=force, progress=progress, report=report,
                         table_only=table_only, runs=runs, select=None if run is None else strings(run),
                         executor=executor, cluster=cluster, wait=wait)
