"""Threshold rules: the published bisection step by step, the exact optimum, FPR thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mddpm.evaluation import threshold
from mddpm.evaluation.metrics import PooledScores, RankedScores
from mddpm.evaluation.threshold import (
    bisection_search,
    bisection_threshold,
    exact_search,
    exact_threshold,
    fpr_thresholds,
    pooled_dice,
)
from mddpm.kernels import score_passes

# 8 voxels, scores in 1/16 steps (exact in float32 and float64); lesion = the scores 9/16, 11/16, 13/16.
SCORES = np.array([0, 1, 3, 5, 9, 11, 13, 16], dtype=np.float32) / 16
LESION = np.array([0, 0, 0, 0, 1, 1, 1, 0], dtype=bool)


def test_bisection_reproduces_the_published_steps_by_hand():
    """Worked by hand (G = 3 lesion voxels, Dice = 2 TP / (P + 3), A > q):

    step 0: [0, 1]      q1=.25 (P5 TP3: 6/8)    q3=.75 (P2 TP1: 2/5)  .75 >= .4 -> best q1=.25, go [0, .5]
    step 1: [0, .5]     q1=.125 (P6 TP3: 6/9)   q3=.375 (P4 TP3: 6/7) 6/9 < 6/7 -> best q3=.375, go [.25, .5]
    step 2: [.25, .5]   q1=.3125 (A > 5/16, P4: 6/7)  q3=.4375 (6/7)  tie, >= -> best q1=.3125, go [.25, .375]
    step 3: [.25, .375] q1=.28125 (P5: 6/8)  q3=.34375 (6/7)  q3 wins, 6/7 >= 6/7 -> best q3, go [.3125, .375]
    step k = 4..9: [.3125, .3125 + .0625 / 2**(k-4)]: both quartiles 6/7, q1 recorded (>=), interval halves.
    """
    result = bisection_threshold(torch.from_numpy(SCORES), torch.from_numpy(LESION))
    expected = [  # (lo, hi, q1, q3, dice_q1, dice_q3, best_threshold)
        (0.0, 1.0, 0.25, 0.75, 6 / 8, 2 / 5, 0.25),
        (0.0, 0.5, 0.125, 0.375, 6 / 9, 6 / 7, 0.375),
        (0.25, 0.5, 0.3125, 0.4375, 6 / 7, 6 / 7, 0.3125),
        (0.25, 0.375, 0.28125, 0.34375, 6 / 8, 6 / 7, 0.34375),
        (0.3125, 0.375, 0.328125, 0.359375, 6 / 7, 6 / 7, 0.328125),
    ]
    for k in range(5, 10):
        width = 0.0625 / 2 ** (k - 4)
        expected.append((0.3125, 0.3125 + width, 0.3125 + width / 4, 0.3125 + 3 * width / 4, 6 / 7, 6 / 7,
                         0.3125 + width / 4))
    assert len(result.steps) == 10
    for step, want in zip(result.steps, expected):
        got = (step["lo"], step["hi"], step["q1"], step["q3"], step["dice_q1"], step["dice_q3"], step["best_threshold"])
        assert got == pytest.approx(want, abs=1e-15), step
    assert result.threshold == 0.3125 + 0.0625 / 32 / 4 and result.dice == pytest.approx(6 / 7)
    assert result.rule == "bisection"


def test_bisection_all_zero_scores_sets_hi_to_one():
    result = bisection_threshold(torch.zeros(10), torch.tensor([1] + [0] * 9))
    assert result.steps[0]["lo"] == 0.0 and result.steps[0]["hi"] == 1.0
    # every Dice is 0 and ">=" records q1 each time: the last q1 of [0, 1/512]
    assert result.dice == 0.0 and result.threshold == 1 / 2048


def naive_bisection(x: np.ndarray, y: np.ndarray, max_steps: int = 10):
    """The protocol text (§5.3) written directly on numpy arrays: full passes at every quartile."""

    def d(q):
        p = x > np.float32(q)
        den = p.sum() + y.sum()
        return 2 * (p & y).sum() / den if den else math.nan

    lo, hi, best, best_t = 0.0, float(x.max()), 0.0, 0.0
    for _ in range(max_steps):
        if lo == hi:
            hi = 1.0
        mid, q1, q3 = lo + (hi - lo) * 0.5, lo + (hi - lo) * 0.25, lo + (hi - lo) * 0.75
        d1, d3 = d(q1), d(q3)
        if d1 >= d3:
            if d1 >= best:
                best, best_t = d1, q1
            hi = mid
        else:
            if d3 >= best:
                best, best_t = d3, q3
            lo = mid
    return best, best_t


def random_maps(seed: int, n: int = 4000):
    rng = np.random.default_rng(seed)
    gt = rng.random(n) < 0.05
    scores = np.abs(rng.normal(0, 0.05, n)) + gt * rng.uniform(0, 0.3, n)
    scores[rng.random(n) < 0.5] = 0  # background zeros
    scores = np.round(scores, 3).astype(np.float32)
    return scores, gt


@pytest.mark.parametrize("seed", range(5))
def test_bisection_matches_direct_implementation(seed):
    scores, gt = random_maps(seed)
    result = bisection_threshold(torch.from_numpy(scores), torch.from_numpy(gt))
    best, best_t = naive_bisection(scores, gt)
    assert result.dice == best and result.threshold == best_t
    on_ranking = bisection_search(RankedScores.from_scores(torch.from_numpy(scores), torch.from_numpy(gt)))
    assert on_ranking.steps == result.steps


def brute_force_best_dice(scores: np.ndarray, gt: np.ndarray) -> float:
    candidates = np.concatenate([np.unique(scores), [scores.min() - 1]])
    return max(2 * ((scores > t) & gt).sum() / ((scores > t).sum() + gt.sum()) for t in candidates)


@pytest.mark.parametrize("seed", range(8))
def test_exact_is_optimal_and_never_worse_than_bisection(seed):
    scores, gt = random_maps(100 + seed, n=1500)
    s, g = torch.from_numpy(scores), torch.from_numpy(gt)
    exact, bisection = exact_threshold(s, g), bisection_threshold(s, g)
    assert exact.dice == pytest.approx(brute_force_best_dice(scores, gt), abs=1e-15)
    assert exact.dice >= bisection.dice
    assert pooled_dice(RankedScores.from_scores(s, g), exact.threshold) == pytest.approx(exact.dice, abs=1e-15)


def test_exact_hand_case_and_edge_cases():
    result = exact_threshold(torch.from_numpy(SCORES), torch.from_numpy(LESION))
    assert result.threshold == 0.3125 and result.dice == pytest.approx(6 / 7)  # A > 5/16 = {9, 11, 13, 16}/16
    everything = exact_threshold(torch.tensor([0.2, 0.5, 0.7]), torch.tensor([1, 1, 1]))
    assert everything.dice == 1.0 and everything.threshold < 0.2 and everything.threshold == pytest.approx(0.2)
    none = exact_threshold(torch.tensor([0.2, 0.5]), torch.tensor([0, 0]))
    assert math.isnan(none.dice) and none.threshold == pytest.approx(0.5)


def test_fpr_thresholds_are_the_lowest_meeting_the_rate():
    rng = np.random.default_rng(9)
    healthy = np.round(rng.random(1000), 2).astype(np.float32)  # ties
    results = fpr_thresholds(torch.from_numpy(healthy), rates=(0.01, 0.05, 0.1))
    assert [r.rule for r in results] == ["fpr-0.01", "fpr-0.05", "fpr-0.1"]
    for rate, r in zip((0.01, 0.05, 0.1), results):
        assert (healthy > np.float32(r.threshold)).mean() <= rate
        lower = healthy[healthy < np.float32(r.threshold)]
        assert lower.size == 0 or (healthy > lower.max()).mean() > rate  # the next lower candidate is too many
        assert r.details["healthy_fpr"] == (healthy > np.float32(r.threshold)).mean()


def test_fpr_thresholds_edge_rates():
    healthy = torch.tensor([0.0, 0.0, 0.0, 0.4, 0.8])
    zero, half, one = fpr_thresholds(healthy, rates=(0.0, 0.5, 1.0))
    assert zero.threshold == pytest.approx(0.8) and zero.details["healthy_fpr"] == 0.0
    assert half.threshold == pytest.approx(0.0) and half.details["healthy_fpr"] == 0.4
    assert one.threshold < 0.0 and one.details["healthy_fpr"] == 1.0
    with pytest.raises(ValueError):
        fpr_thresholds(torch.tensor([]))


def test_fpr_thresholds_use_only_in_brain_voxels():
    scores = torch.tensor([[0.0, 0.9, 0.1, 0.2], [0.3, 0.4, 0.0, 0.0]])
    brain = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]])
    (in_brain,) = fpr_thresholds(scores, brain, rates=(0.2,))  # 5 in-brain voxels: 1 may be above
    assert in_brain.threshold == pytest.approx(0.4) and in_brain.details["healthy_voxels"] == 5
    (everything,) = fpr_thresholds(scores, rates=(0.2,))  # 8 voxels: 1 may be above
    assert everything.threshold == pytest.approx(0.4) and everything.details["healthy_voxels"] == 8
    (quarter,) = fpr_thresholds(scores, rates=(0.25,))  # 8 voxels: 2 may be above
    assert quarter.threshold == pytest.approx(0.3)


def scan_every_distinct_score(ranked: RankedScores) -> tuple[float, float]:
    """(τ, Dice) of the best ``A > τ`` found by scoring every distinct score of a ranking, highest τ
    among ties (the exact rule written directly on the cumulative curve)."""
    values, predicted, tp = ranked.curve()
    dice = 2 * tp.double() / (predicted + ranked.n_positive).double()
    i = int(torch.argmax(dice))
    if i + 1 < values.numel():
        return values[i + 1].item(), dice[i].item()
    return torch.nextafter(values[i], torch.tensor(-math.inf, dtype=values.dtype)).item(), dice[i].item()


@pytest.mark.parametrize("kind", ["maps", "signed", "ties", "float64", "all-lesion", "constant"])
@pytest.mark.parametrize("hist_bits", [16, 5])  # 5: coarse bins, many scores per bin scanned
def test_exact_on_a_pool_equals_a_scan_of_every_distinct_score(kind, hist_bits, monkeypatch):
    """Volumes pooled unsorted (the pruned search) against a full ranking of the same voxels."""
    monkeypatch.setattr(score_passes, "HIST_BITS", hist_bits)
    rng = np.random.default_rng(len(kind))
    parts = []
    for v in range(6):
        scores, gt = random_maps(10 * v + len(kind), n=30000)
        if kind == "signed":
            scores = scores - np.float32(0.05)
        elif kind == "ties":
            scores = np.round(scores * 20).astype(np.float32) / 20
        elif kind == "float64":
            scores = scores.astype(np.float64) + rng.random(scores.size) * 1e-9
        elif kind == "all-lesion":
            gt = np.ones_like(gt)
        elif kind == "constant":
            scores = np.full_like(scores, 0.25)
        parts.append((torch.from_numpy(scores), torch.from_numpy(gt)))
    pooled = PooledScores.pool([PooledScores.from_scores(s, g) for s, g in parts])
    ranked = RankedScores.pool([RankedScores.from_scores(s, g) for s, g in parts])
    want = scan_every_distinct_score(ranked)
    for source in (pooled, ranked):
        got = exact_search(source)
        assert (got.threshold, got.dice) == want
    if kind == "maps" and hist_bits == 16:  # only a few bins are scored score by score
        assert 1 <= exact_search(pooled).details["scores_scored"] < torch.unique(ranked.values).numel() // 4


def test_bisection_drops_voxels_outside_its_interval_and_stays_exact():
    """A pool whose healthy scores lie far below the lesion's: after the first steps the counts
    read only the voxels still inside the interval, with the same steps as full passes."""
    rng = np.random.default_rng(11)
    n = 200_000
    gt = rng.random(n) < 0.01
    scores = (np.abs(rng.normal(0, 0.03, n)) + gt * rng.uniform(0.2, 0.6, n)).astype(np.float32)
    pooled = PooledScores.from_scores(torch.from_numpy(scores), torch.from_numpy(gt))
    counts = threshold._InwardCounts(pooled)
    best_t, best_dice, steps = threshold.bisect(counts.dice, pooled.highest, narrow=counts.narrow)
    assert counts.values.numel() < n // 10  # voxels were dropped
    assert (best_dice, best_t) == naive_bisection(scores, gt)
    assert steps == bisection_threshold(torch.from_numpy(scores), torch.from_numpy(gt)).steps


@pytest.mark.parametrize("healthy", ["none", "far below"])
def test_exact_threshold_is_the_next_lower_score_in_any_bin(healthy):
    """Lesion scores well above the healthy ones: the best prediction is every lesion voxel, and τ is
    the next lower score, here in a bin the search does not read again (or the minimum, 0)."""
    rng = np.random.default_rng(3)
    gt = rng.random(5000) < 0.1
    scores = np.where(gt, rng.uniform(0.8, 0.9, gt.size), 0.0).astype(np.float32)
    if healthy == "far below":
        scores[~gt] = rng.uniform(0.1, 0.2, (~gt).sum()).astype(np.float32)
        scores[:10] = 0
        gt[:10] = False
    s, g = torch.from_numpy(scores), torch.from_numpy(gt)
    want = scan_every_distinct_score(RankedScores.from_scores(s, g))
    got = exact_search(PooledScores.from_scores(s, g))
    assert (got.threshold, got.dice) == want == ((scores[~gt].max().item()), 1.0)


def test_grid_counts_equal_counting_passes_on_and_off_the_grid():
    """The one-pass counts of the bisection's grid (signed scores, ties, the maximum itself) equal
    a counting pass at every grid point; a threshold off the grid takes the counting pass."""
    scores, gt = random_maps(4, n=20000)
    scores = (np.round(scores * 64) / 64 - np.float32(0.1)).astype(np.float32)  # many scores on grid points
    pooled = PooledScores.from_scores(torch.from_numpy(scores), torch.from_numpy(gt))
    counts = threshold._GridCounts(pooled, 6)
    for j in range(1, 64):
        t = pooled.highest * j / 64
        assert counts.dice(t) == threshold.pooled_dice(pooled, t)
    assert counts.dice(0.123456) == threshold.pooled_dice(pooled, 0.123456)
