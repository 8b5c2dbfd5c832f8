"""Choosing the binarisation threshold τ (predict ``A > τ``), protocol §5.3 and §5.4.

- ``bisection``: the published search (Zimmerer's iterative bisection, ``find_best_val``) for
  the threshold maximising the **pooled** voxel Dice over all validation volumes, 10 steps.
  Applied to a single volume's own labels it gives the published per-volume ORACLE
  (``BestDicePerVol``), which looks at the labels it is scored on.
- ``exact``: the pooled-Dice-optimal threshold over every distinct score (an improvement, never
  worse than the bisection on the data it is chosen on).
- ``fpr-<rate>``: thresholds at a target voxel false-positive rate on healthy volumes (the
  published code logs them for IXI; they use no lesion labels).

The bisection reads its 20 counts from an unsorted :class:`~mddpm.evaluation.metrics.PooledScores`
(one pass over the voxels above the minimum per count, no sort); the exact and FPR searches from
a :class:`~mddpm.evaluation.metrics.RankedScores` (one sort, then every candidate at once).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import torch

from mddpm.evaluation.metrics import PooledScores, RankedScores

BISECTION_STEPS = 10
FPR_RATES = (0.01, 0.05, 0.10)


@dataclass
class ThresholdResult:
    """A threshold τ (predict ``A > τ``), the rule that chose it and the pooled Dice it reached
    on the data it was chosen on (NaN where there are no labels). ``steps`` traces the bisection."""

    rule: str
    threshold: float
    dice: float
    steps: list[dict] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def pooled_dice(ranked: PooledScores, threshold: float) -> float:
    """Dice of ``A > threshold`` over all voxels of ``ranked``; NaN when prediction and truth are empty."""
    predicted, tp = ranked.count_above(threshold)
    den = predicted + ranked.n_positive
    return 2 * tp / den if den > 0 else math.nan


def bisect(dice_at: Callable[[float], float], highest: float,
           max_steps: int = BISECTION_STEPS) -> tuple[float, float, list[dict]]:
    """The published bisection (``find_best_val``) over any pooled-Dice function: (τ, Dice, steps).

    Start from [lo, hi] = [0, ``highest``] with best = (Dice 0, τ 0). Each step: if lo == hi, set
    hi = 1; evaluate the pooled Dice at q1 = lo + (hi − lo)/4 and q3 = lo + 3(hi − lo)/4; if
    Dice(q1) ≥ Dice(q3), record q1 when Dice(q1) ≥ best and continue in [lo, mid], else record q3
    when Dice(q3) ≥ best and continue in [mid, hi]. Bounds are float64 (as NumPy 1.x computed
    them from the float32 maximum); comparisons of NaN Dice are false, as in Python.
    """
    lo, hi = 0.0, highest
    best_dice, best_t = 0.0, 0.0
    steps = []
    for step in range(max_steps):
        if lo == hi:
            hi = 1.0
        mid = lo + (hi - lo) * 0.5
        q1, q3 = lo + (hi - lo) * 0.25, lo + (hi - lo) * 0.75
        d1, d3 = dice_at(q1), dice_at(q3)
        record = {"step": step, "lo": lo, "hi": hi, "q1": q1, "q3": q3, "dice_q1": d1, "dice_q3": d3}
        if d1 >= d3:
            if d1 >= best_dice:
                best_dice, best_t = d1, q1
            hi = mid
        else:
            if d3 >= best_dice:
                best_dice, best_t = d3, q3
            lo = mid
        steps.append({**record, "best_dice": best_dice, "best_threshold": best_t})
    return best_t, best_dice, steps


def bisection_search(ranked: PooledScores, max_steps: int = BISECTION_STEPS) -> ThresholdResult:
    """:func:`bisect` on the pooled Dice of ``ranked`` (two counts per candidate), step by step."""
    threshold, dice, steps = bisect(lambda t: pooled_dice(ranked, t), ranked.highest, max_steps)
    return ThresholdResult("bisection", threshold, dice, steps, {"max_steps": max_steps})


def bisection_threshold(scores: torch.Tensor, gt: torch.Tensor, max_steps: int = BISECTION_STEPS) -> ThresholdResult:
    """:func:`bisection_search` on ``scores`` and ``gt`` (same shape, all voxels pooled)."""
    return bisection_search(PooledScores.from_scores(scores, gt), max_steps)


def _below(value: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` number below ``value``."""
    v = torch.tensor(value, dtype=dtype)
    return torch.nextafter(v, torch.tensor(-math.inf, dtype=dtype)).item()


def exact_search(ranked: RankedScores) -> ThresholdResult:
    """The threshold with the highest pooled Dice over all candidates, exactly.

    Every prediction ``A > τ`` equals ``A ≥ v`` for a distinct score ``v``; all of them are
    scored from cumulative counts. Returns τ = the next lower distinct score (or the number just
    below the minimum when predicting every voxel is best); among equal Dice the highest τ wins.
    Without positive voxels: τ = the maximum score (nothing predicted), Dice NaN.
    """
    if ranked.n_positive == 0:
        return ThresholdResult("exact", ranked.highest, math.nan)
    values, predicted, tp = ranked.curve()
    dice = 2 * tp.double() / (predicted + ranked.n_positive).double()
    i = int(torch.argmax(dice).item())
    threshold = values[i + 1].item() if i + 1 < values.numel() else _below(values[i].item(), ranked.dtype)
    return ThresholdResult("exact", threshold, dice[i].item(), details={"candidates": values.numel()})


def exact_threshold(scores: torch.Tensor, gt: torch.Tensor) -> ThresholdResult:
    """:func:`exact_search` on ``scores`` and ``gt`` (same shape, all voxels pooled)."""
    return exact_search(RankedScores.from_scores(scores, gt))


def fpr_rule(rate: float) -> str:
    """Rule name of a false-positive-rate threshold, e.g. ``"fpr-0.05"``."""
    return f"fpr-{rate:g}"


def fpr_search(healthy: RankedScores, rates: tuple[float, ...] = FPR_RATES) -> list[ThresholdResult]:
    """Thresholds at target voxel false-positive rates on ranked healthy voxels (labels unused).

    For each rate r, τ is the smallest score with at most ``floor(r · n)`` of the ``n`` voxels
    above it, i.e. the lowest threshold whose false-positive rate ``#(A > τ) / n`` is ≤ r. The
    published code pooled all voxels of the maps (background included) and read τ off
    scikit-learn's ``roc_curve``, whose dropped collinear points can move τ past the target; here
    the caller chooses the voxels (``evaluate`` passes the in-brain ones) and τ is exact.
    """
    n, above_lowest = healthy.n_voxels, healthy.values.numel()
    results = []
    for rate in rates:
        if not 0 <= rate <= 1:
            raise ValueError(f"false-positive rate must be in [0, 1], got {rate}")
        allowed = math.floor(Fraction(str(rate)) * n)
        if allowed < above_lowest:
            threshold = healthy.values[above_lowest - 1 - allowed].item()
        elif allowed < n:
            threshold = healthy.lowest
        else:
            threshold = _below(healthy.lowest, healthy.dtype)
        predicted, _ = healthy.count_above(threshold)
        results.append(ThresholdResult(fpr_rule(rate), threshold, math.nan,
                                       details={"target_fpr": rate, "healthy_fpr": predicted / n, "healthy_voxels": n}))
    return results


def fpr_thresholds(healthy_scores: torch.Tensor, brain_mask: torch.Tensor | None = None,
                   rates: tuple[float, ...] = FPR_RATES) -> list[ThresholdResult]:
    """:func:`fpr_search` on healthy scores: the voxels inside ``brain_mask`` (> 0, same shape),
    or all voxels without a mask."""
    if brain_mask is not None:
        if brain_mask.shape != healthy_scores.shape:
            raise ValueError(f"scores {tuple(healthy_scores.shape)} and brain mask {tuple(brain_mask.shape)} "
                             "differ in shape")
        healthy_scores = healthy_scores[brain_mask > 0]
    if healthy_scores.numel() == 0:
        raise ValueError("no healthy voxels to choose a false-positive-rate threshold from")
    no_lesion = torch.zeros_like(healthy_scores, dtype=torch.bool)
    return fpr_search(RankedScores.from_scores(healthy_scores, no_lesion), rates)
