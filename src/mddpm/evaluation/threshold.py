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
(one compiled pass over the voxels still in its interval per count, no sort); the exact search
from the same pool (one binning pass, then a sort of the few bins that can hold the optimum); the
FPR search from a :class:`~mddpm.evaluation.metrics.RankedScores` (one sort, then every candidate).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import numpy as np
import torch

from mddpm.evaluation.metrics import PooledScores, RankedScores, as_numpy, round_to_dtype, select_between
from mddpm.kernels.score_passes import grid_counts, histogram, key_bins, select_bins

BISECTION_STEPS = 10
GRID_BITS_MAX = 20  # the one-pass counts of a longer bisection would need more than 2^20 grid points
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


def bisect(dice_at: Callable[[float], float], highest: float, max_steps: int = BISECTION_STEPS,
           narrow: Callable[[float, float], None] | None = None) -> tuple[float, float, list[dict]]:
    """The published bisection (``find_best_val``) over any pooled-Dice function: (τ, Dice, steps).

    Start from [lo, hi] = [0, ``highest``] with best = (Dice 0, τ 0). Each step: if lo == hi, set
    hi = 1; evaluate the pooled Dice at q1 = lo + (hi − lo)/4 and q3 = lo + 3(hi − lo)/4; if
    Dice(q1) ≥ Dice(q3), record q1 when Dice(q1) ≥ best and continue in [lo, mid], else record q3
    when Dice(q3) ≥ best and continue in [mid, hi]. Bounds are float64 (as NumPy 1.x computed
    them from the float32 maximum); comparisons of NaN Dice are false, as in Python. ``narrow(lo, hi)``
    is told each new interval (while lo < hi), whose interior holds every later candidate.
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
        if narrow is not None and lo < hi:
            narrow(lo, hi)
    return best_t, best_dice, steps


class _InwardCounts:
    """Counts above thresholds for the bisection, whose candidates only move inward. When a step's
    counts show that at most half of the kept voxels lie inside the new interval, the others are
    counted once and dropped, so later counting passes read fewer voxels (exact: a count at ``q``
    inside [lo, hi] is the kept voxels' count plus those above hi)."""

    def __init__(self, pooled: PooledScores):
        self.pooled, self.values, self.positives = pooled, pooled.values, pooled.positives
        self.count = pooled._count  # a pass per count, or a binary search on a ranking (kept in order)
        self.above = (0, 0)  # (voxels, positive voxels) above the kept range, dropped
        self.bounds: tuple[float, float] | None = None
        self.last: dict[float, int] = {}  # threshold -> kept voxels above it, from the latest counts

    def dice(self, t: float) -> float:
        q = round_to_dtype(t, self.pooled.dtype)
        if self.bounds is not None and not self.bounds[0] <= q <= self.bounds[1]:
            return pooled_dice(self.pooled, t)  # outside the kept range (the bisection never asks)
        qt = torch.tensor([q], dtype=self.pooled.dtype, device=self.values.device)
        kept_above = self.count(self.values, qt)
        self.last[t] = kept_above
        predicted = self.above[0] + kept_above + (self.pooled.n_lowest if self.pooled.lowest > q else 0)
        den = predicted + self.pooled.n_positive
        return 2 * (self.above[1] + self.count(self.positives, qt)) / den if den > 0 else math.nan

    def narrow(self, lo: float, hi: float) -> None:
        """Keep the voxels in [lo, hi] if the latest counts bound them by half of those kept now."""
        below_lo = [n for t, n in self.last.items() if t <= lo]  # kept voxels above a point at or below lo
        above_hi = [n for t, n in self.last.items() if t >= hi]
        self.last = {}
        inside = min(below_lo, default=self.values.numel()) - max(above_hi, default=0)
        if isinstance(self.pooled, RankedScores) or inside > self.values.numel() // 2:
            return  # counts on a ranking are binary searches already; or too little to drop
        lo_q, hi_q = round_to_dtype(lo, self.pooled.dtype), round_to_dtype(hi, self.pooled.dtype)
        t = torch.tensor([hi_q], dtype=self.pooled.dtype, device=self.values.device)
        self.above = (self.above[0] + self.count(self.values, t), self.above[1] + self.count(self.positives, t))
        self.values = select_between(self.values, lo_q, hi_q)
        self.positives = select_between(self.positives, lo_q, hi_q)
        self.bounds = (lo_q, hi_q)


class _GridCounts:
    """Counts above every threshold the bisection can ask in its first ``bits − 1`` steps, from one
    compiled pass (CPU). Its candidates are the points j · max / 2^bits of a grid (the interval ends
    are such points, and each candidate a quarter into one; exact in float64), rounded to the
    scores' dtype: each voxel is counted once by the number of grid points below it. A threshold
    not on the grid (after the ``lo == hi`` reset) takes a full counting pass."""

    def __init__(self, pooled: PooledScores, bits: int):
        self.pooled = pooled
        n = (1 << bits) - 1
        values, positives = as_numpy(pooled.values), as_numpy(pooled.positives)
        grid = (pooled.highest * np.arange(1, n + 1, dtype=np.float64) / (1 << bits)).astype(values.dtype)
        columns = []
        for x in (values, positives):
            counts = np.zeros(n + 1, np.int64)
            grid_counts(x, grid, (1 << bits) / pooled.highest, counts)
            columns.append(np.cumsum(counts[::-1])[::-1][1:].tolist())  # above grid point j: buckets > j
        self.above = dict(zip(grid.tolist(), zip(*columns)))

    def dice(self, t: float) -> float:
        q = round_to_dtype(t, self.pooled.dtype)
        if q not in self.above:
            return pooled_dice(self.pooled, t)
        n, tp = self.above[q]
        den = n + (self.pooled.n_lowest if self.pooled.lowest > q else 0) + self.pooled.n_positive
        return 2 * tp / den if den > 0 else math.nan


def bisection_search(ranked: PooledScores, max_steps: int = BISECTION_STEPS) -> ThresholdResult:
    """:func:`bisect` on the pooled Dice of ``ranked`` (two counts per candidate): on the CPU every
    count from one pass (:class:`_GridCounts`), else step by step, each count reading only the
    voxels still inside the search interval (:class:`_InwardCounts`; binary searches on a ranking)."""
    grid = (ranked.values.device.type == "cpu" and not isinstance(ranked, RankedScores)
            and 0 < ranked.highest < math.inf and max_steps + 1 <= GRID_BITS_MAX)
    counts = _GridCounts(ranked, max_steps + 1) if grid else _InwardCounts(ranked)
    threshold, dice, steps = bisect(counts.dice, ranked.highest, max_steps, None if grid else counts.narrow)
    return ThresholdResult("bisection", threshold, dice, steps, {"max_steps": max_steps})


def bisection_threshold(scores: torch.Tensor, gt: torch.Tensor, max_steps: int = BISECTION_STEPS) -> ThresholdResult:
    """:func:`bisection_search` on ``scores`` and ``gt`` (same shape, all voxels pooled)."""
    return bisection_search(PooledScores.from_scores(scores, gt), max_steps)


def _below(value: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` number below ``value``."""
    v = torch.tensor(value, dtype=dtype)
    return torch.nextafter(v, torch.tensor(-math.inf, dtype=dtype)).item()


def exact_search(pooled: PooledScores) -> ThresholdResult:
    """The threshold with the highest pooled Dice over all candidates, exactly, without sorting the pool.

    Every prediction ``A > τ`` equals ``A ≥ v`` for a distinct score ``v`` (or predicts every
    voxel). One pass bins the voxels and the positives by score (:mod:`mddpm.kernels.score_passes`: 2¹⁶ bins
    in score order); cumulative counts give the Dice of every threshold between bins (achievable)
    and a bound for every threshold inside a bin (its voxels at best all positive). Only the
    voxels of bins that hold a positive and whose bound reaches the best achievable Dice are read
    again, sorted and scored score by score. Returns τ = the next lower distinct score (or the
    number just below the minimum when predicting every voxel is best); among equal Dice the
    highest τ wins, as a scan of every distinct score would choose. Without positive voxels: τ =
    the maximum score, Dice NaN.
    """
    if pooled.n_positive == 0:
        return ThresholdResult("exact", pooled.highest, math.nan)
    g = pooled.n_positive
    values = as_numpy(pooled.values)
    positives = as_numpy(pooled.positives)
    positives = positives[positives > pooled.lowest]
    h_all, h_pos = histogram(values), histogram(positives)
    above_all, above_pos = _in_bins_above(h_all), _in_bins_above(h_pos)
    best = max(2 * g / (pooled.n_voxels + g), float(np.max(2 * above_pos / (above_all + g))))
    bound = 2 * (above_pos + h_pos) / (above_all + h_pos + g)
    # a bin without positives only adds false positives: every score in it is below its edge's Dice
    keep = (h_pos > 0) & (bound >= best * (1 - 1e-12))
    return _scan_bins(pooled, values, select_bins(values, keep), select_bins(positives, keep), keep, h_all, h_pos, g)


def _in_bins_above(counts: np.ndarray) -> np.ndarray:
    """The total of ``counts`` over the bins above each bin."""
    return np.append(np.cumsum(counts[::-1])[::-1][1:], 0)


def _scan_bins(pooled: PooledScores, full: np.ndarray, values: np.ndarray, positives: np.ndarray, keep: np.ndarray,
               h_all: np.ndarray, h_pos: np.ndarray, g: int) -> ThresholdResult:
    """Score every distinct score of ``values`` (the voxels of the ``keep`` bins; ``positives`` the
    same for positive voxels) and predicting every voxel (last); pick the best as
    :func:`exact_search` describes. ``h_all`` / ``h_pos``: the pool's counts per bin."""
    values, positives = np.sort(values), np.sort(positives)
    distinct = np.unique(values)[::-1]
    bins = key_bins(distinct)

    def above(hist: np.ndarray, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Voxels ≥ v: those of the bins above v's, plus those of v's bin (read again, sorted in x)."""
        return (_in_bins_above(hist)[bins] + x.size - np.searchsorted(x, v, "left")
                - _in_bins_above(hist * keep)[bins])

    predicted, tp = above(h_all, values, distinct), above(h_pos, positives, distinct)
    dice = np.append(2 * tp.astype(np.float64) / (predicted + g).astype(np.float64), 2 * g / (pooled.n_voxels + g))
    i = int(np.argmax(dice))
    details = {"scores_scored": int(distinct.size), "bins_scored": int(keep.sum())}
    if i == distinct.size:  # predicting every voxel is best
        return ThresholdResult("exact", _below(pooled.lowest, pooled.dtype), float(dice[i]), details=details)
    # τ: the next lower score, in v's bin or the nearest non-empty bin below it
    v, b = distinct[i], bins[i]
    k = int(np.searchsorted(values, v, "left"))
    lower = np.flatnonzero(h_all[:b] > 0)
    if k > 0 and key_bins(values[k - 1:k])[0] == b:
        threshold = values[k - 1].item()
    elif lower.size == 0:
        threshold = pooled.lowest
    elif keep[lower[-1]]:
        threshold = values[k - 1].item()
    else:  # a bin not read again: one more pass over the pool
        only = np.zeros_like(keep)
        only[lower[-1]] = True
        threshold = select_bins(full, only).max().item()
    return ThresholdResult("exact", threshold, float(dice[i]), details=details)


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
