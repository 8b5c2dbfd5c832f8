"""The one scoring chain: post-process an anomaly map -> threshold -> remove small components.

``mddpm evaluate`` defines the settings (stored as ``"postprocess"`` in ``metrics.json`` and
``threshold.json``); ``mddpm detect`` and the report read them back with
:meth:`Scoring.from_stored`, so all three post-process and segment a map the same way. The pooled
precision-recall curve of a maps folder (the report's picture) is computed here too, exactly, with
the evaluation's own ranking and average precision.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from mddpm.evaluation.maps import open_maps
from mddpm.evaluation.metrics import RankedScores, average_precision, binarise
from mddpm.evaluation.postprocess import (
    CC_MAX_SIZE,
    MEDIAN_KERNEL,
    PostprocessConstants,
    postprocess_map,
    remove_small_components,
)

CURVE_POINTS = 1000  # a pooled precision-recall curve is thinned to about this many points


@dataclass(frozen=True)
class Scoring:
    """Post-processing constants of one evaluation, in voxels of the model grid."""

    erosion_iterations: int | None = None  # brain-mask erosion per axial slice; None = W // 25 (published)
    median_kernel: int = MEDIAN_KERNEL  # odd edge of the 3-D median window; 1 = none
    max_component: int = CC_MAX_SIZE  # components of at most this many voxels are removed

    @classmethod
    def from_constants(cls, constants: PostprocessConstants) -> Scoring:
        """The chain of a post-processing rule (:func:`~mddpm.evaluation.postprocess.postprocess_constants`)."""
        return cls(None, constants.median_kernel, constants.max_component)

    @classmethod
    def from_stored(cls, settings: dict | None) -> Scoring:
        """The chain of the ``"postprocess"`` settings evaluate stores (None: the published one)."""
        settings = settings or {}
        return cls(settings.get("erosion_iterations"), settings.get("median_filter", {}).get("kernel", MEDIAN_KERNEL),
                   settings.get("components", {}).get("removed_if_voxels_at_most", CC_MAX_SIZE))

    def postprocess(self, score: torch.Tensor, brain_mask: torch.Tensor, threads: int | None = None) -> torch.Tensor:
        """Masked and median-filtered map [Z, H, W] float32 (:func:`~mddpm.evaluation.postprocess.postprocess_map`)."""
        return postprocess_map(score, brain_mask, erosion_iterations=self.erosion_iterations,
                               median_kernel=self.median_kernel, threads=threads)

    def segment(self, processed: torch.Tensor, threshold: float) -> torch.Tensor:
        """``processed > threshold`` (threshold in the map's dtype) without its small components: bool [Z, H, W]."""
        return remove_small_components(binarise(processed, threshold), max_size=self.max_component)


def pooled_pr_curve(maps_dir: str | os.PathLike, device: str = "cpu", settings: dict | None = None) -> dict:
    """Precision-recall over every voxel of every post-processed map of a maps folder (post-processed
    with the stored ``settings``) against its label.

    Returns {"recall", "precision" (about :data:`CURVE_POINTS` points, recall ascending), "ap" (the
    pooled average precision of :func:`~mddpm.evaluation.metrics.average_precision`; None without
    lesion voxels), "voxels", "lesion_voxels", "volumes"}. Holds the in-brain scores of the whole
    split in memory (4 bytes a voxel).
    """
    maps = open_maps(maps_dir, "test")
    scoring, dev = Scoring.from_stored(settings), torch.device(device)
    parts = []
    with torch.inference_mode():
        for cid in maps.case_ids:
            score, mask, label = maps.load(cid, dev)
            parts.append(RankedScores.from_scores(scoring.postprocess(score, mask), label))
    ranked = RankedScores.pool(parts)
    out = {"recall": [], "precision": [], "ap": None, "voxels": ranked.n_voxels, "lesion_voxels": ranked.n_positive,
           "volumes": len(maps.case_ids)}
    if ranked.n_positive == 0:
        return out
    _, predicted, tp = ranked.curve()
    precision = (tp.double() / predicted.double()).cpu().numpy()
    recall = (tp.double() / ranked.n_positive).cpu().numpy()
    idx = np.unique(np.concatenate([[0, recall.size - 1], np.searchsorted(
        recall, np.linspace(0, 1, CURVE_POINTS + 1)).clip(0, recall.size - 1)]))
    out.update(recall=recall[idx].tolist(), precision=precision[idx].tolist(), ap=average_precision(ranked))
    return out
