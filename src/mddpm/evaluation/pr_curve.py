"""The pooled precision-recall curve of an evaluation's test split (``pr.json``, the report's picture),
computed exactly from the same ranking as the evaluation's average precision."""

from __future__ import annotations

import numpy as np

from mddpm.evaluation.metrics import RankedScores, average_precision

CURVE_POINTS = 1000  # a pooled precision-recall curve is thinned to about this many points


def pooled_pr_curve(parts: list[RankedScores]) -> dict:
    """Precision-recall over every voxel of the post-processed maps ranked in ``parts`` (one per volume).

    Returns {"recall", "precision" (about :data:`CURVE_POINTS` points, recall ascending), "ap" (the
    pooled average precision of :func:`~mddpm.evaluation.metrics.average_precision`; None without
    lesion voxels), "voxels", "lesion_voxels", "volumes"}.
    """
    ranked = RankedScores.pool(parts)
    out = {"recall": [], "precision": [], "ap": None, "voxels": ranked.n_voxels, "lesion_voxels": ranked.n_positive,
           "volumes": len(parts)}
    if ranked.n_positive == 0:
        return out
    _, predicted, tp = ranked.curve()
    precision = (tp.double() / predicted.double()).cpu().numpy()
    recall = (tp.double() / ranked.n_positive).cpu().numpy()
    idx = np.unique(np.concatenate([[0, recall.size - 1], np.searchsorted(
        recall, np.linspace(0, 1, CURVE_POINTS + 1)).clip(0, recall.size - 1)]))
    out.update(recall=recall[idx].tolist(), precision=precision[idx].tolist(), ap=average_precision(ranked))
    return out
