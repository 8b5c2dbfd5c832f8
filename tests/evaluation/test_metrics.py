"""Metrics against scikit-learn and hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, confusion_matrix, f1_score, roc_auc_score

from mddpm.evaluation.metrics import (
    PooledScores,
    RankedScores,
    auroc,
    average_precision,
    binarise,
    confusion_counts,
    dice,
    mean_std,
    ratios,
)


def ranked(scores, gt) -> RankedScores:
    scores = torch.as_tensor(np.asarray(scores, dtype=np.float32))
    return RankedScores.from_scores(scores, torch.as_tensor(np.asarray(gt)))


def random_case(rng, n, ties: bool, zeros: bool):
    s = rng.random(n).astype(np.float32)
    if ties:
        s = np.round(s, 1).astype(np.float32)
    if zeros:
        s[rng.random(n) < 0.6] = 0
    g = rng.random(n) < 0.2
    g[:2] = True, False  # at least one positive and one negative voxel
    return s, g


@pytest.mark.parametrize("seed", range(6))
def test_ap_and_auroc_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    s, g = random_case(rng, int(rng.integers(2, 3000)), ties=seed % 2 == 0, zeros=seed % 3 == 0)
    r = ranked(s, g)
    assert average_precision(r) == pytest.approx(average_precision_score(g, s), abs=1e-12)
    if 0 < g.sum() < g.size:
        assert auroc(r) == pytest.approx(roc_auc_score(g, s), abs=1e-12)


def test_ap_auroc_volume_with_background_zeros_and_negatives():
    rng = np.random.default_rng(7)
    vol = np.zeros((5, 12, 12), np.float32)
    vol[1:4, 3:9, 3:9] = rng.normal(0.1, 0.2, (3, 6, 6))  # some negative scores, ties at 0 with background
    gt = np.zeros_like(vol, dtype=bool)
    gt[2, 4:7, 4:7] = True
    r = RankedScores.from_scores(torch.from_numpy(vol), torch.from_numpy(gt))
    assert r.n_voxels == vol.size and r.n_positive == 9
    assert average_precision(r) == pytest.approx(average_precision_score(gt.ravel(), vol.ravel()), abs=1e-12)
    assert auroc(r) == pytest.approx(roc_auc_score(gt.ravel(), vol.ravel()), abs=1e-12)


def test_ap_auroc_hand_worked_with_ties():
    # scores 0.9(+) 0.8(-) 0.8(+) 0.1(-): thresholds 0.9 -> P 1/1 R 1/2; 0.8 -> P 2/3 R 1; AP = 1/2 + 1/2 * 2/3
    r = ranked([0.9, 0.8, 0.8, 0.1], [1, 0, 1, 0])
    assert average_precision(r) == pytest.approx(0.5 + 1 / 3)
    # ROC points (0,0) (0,1/2) (1/2,1) (1,1): area 1/2 * (1/2 + 1) / 2 + 1/2 = 0.875
    assert auroc(r) == pytest.approx(0.875)


def test_ap_auroc_degenerate_ground_truth():
    assert math.isnan(average_precision(ranked([0.1, 0.5, 0.0], [0, 0, 0])))
    assert math.isnan(auroc(ranked([0.1, 0.5, 0.0], [0, 0, 0])))
    all_pos = ranked([0.1, 0.5, 0.5], [1, 1, 1])
    assert average_precision(all_pos) == pytest.approx(average_precision_score([1, 1, 1], [0.1, 0.5, 0.5]))
    assert math.isnan(auroc(all_pos))
    constant = ranked([0.3, 0.3, 0.3, 0.3], [1, 0, 0, 0])  # one tie group: AP = prevalence, AUROC = 0.5
    assert average_precision(constant) == pytest.approx(0.25) and auroc(constant) == pytest.approx(0.5)


def test_ranked_counts_match_direct_counts():
    rng = np.random.default_rng(4)
    s, g = random_case(rng, 500, ties=True, zeros=True)
    r = ranked(s, g)
    for t in [-1.0, 0.0, 0.05, 0.3, 0.30000001, 0.5, 0.99, 1.0, 2.0]:
        t32 = np.float32(t)
        assert r.count_above(t) == (int((s > t32).sum()), int((s[g] > t32).sum()))
    values, predicted, tp = r.curve()
    assert torch.all(values[1:] < values[:-1])
    for v, n, k in zip(values.tolist(), predicted.tolist(), tp.tolist()):
        assert (n, k) == (int((s >= v).sum()), int((s[g] >= v).sum()))


def test_pooled_ranking_equals_ranking_of_the_concatenation():
    rng = np.random.default_rng(8)
    parts = [random_case(rng, 300, ties=True, zeros=True) for _ in range(3)]
    parts.append((np.round(rng.normal(0, 1, 200), 1).astype(np.float32), rng.random(200) < 0.3))  # lower minimum
    parts.append((np.full(50, 0.5, np.float32), np.zeros(50, bool)))  # one value only, no positives
    pooled = RankedScores.pool([ranked(s, g) for s, g in parts])
    whole = ranked(np.concatenate([s for s, _ in parts]), np.concatenate([g for _, g in parts]))
    assert pooled.lowest == whole.lowest and pooled.n_lowest == whole.n_lowest
    assert torch.equal(pooled.values, whole.values) and torch.equal(pooled.positives, whole.positives)
    assert average_precision(pooled) == average_precision(whole) and auroc(pooled) == auroc(whole)
    with pytest.raises(ValueError):
        RankedScores.pool([])


def test_unsorted_pool_counts_equal_the_ranking():
    rng = np.random.default_rng(9)
    parts = [random_case(rng, 300, ties=True, zeros=True) for _ in range(3)]
    parts.append((np.round(rng.normal(0, 1, 200), 1).astype(np.float32), rng.random(200) < 0.3))
    as_torch = [(torch.from_numpy(s), torch.from_numpy(np.asarray(g))) for s, g in parts]
    pool = PooledScores.pool([PooledScores.from_scores(s, g) for s, g in as_torch])
    ranking = RankedScores.pool([RankedScores.from_scores(s, g) for s, g in as_torch])
    assert type(pool) is PooledScores and type(ranking) is RankedScores
    assert (pool.lowest, pool.n_lowest, pool.n_voxels, pool.n_positive, pool.highest) == (
        ranking.lowest, ranking.n_lowest, ranking.n_voxels, ranking.n_positive, ranking.highest)
    everything = np.concatenate([s for s, _ in parts])
    for t in [-5.0, float(everything.min()), *rng.choice(everything, 20).tolist(), 0.0, 0.25, 10.0]:
        assert pool.count_above(t) == ranking.count_above(t)
    assert torch.equal(pool.ranked().values, ranking.values)
    assert torch.equal(pool.ranked().positives, ranking.positives)


def test_threshold_compares_in_float32():
    scores = torch.tensor([1.0, np.nextafter(np.float32(1), np.float32(2))], dtype=torch.float32)
    t = 1.00000005  # between the two float32 values, rounds to 1.0 in float32
    assert binarise(scores, t).tolist() == [False, True]
    assert ranked(scores.numpy(), [0, 1]).count_above(t) == (1, 1)


def test_dice_hand_cases_and_sklearn():
    z = torch.zeros(4, 4, dtype=torch.bool)
    assert math.isnan(dice(z, z))  # both empty: NaN, as published
    gt = z.clone()
    gt[0, :2] = True
    assert dice(z, gt) == 0.0
    assert dice(gt, gt) == 1.0
    pred = z.clone()
    pred[0, 1:4] = True  # |P|=3, |G|=2, overlap 1 -> 2/5
    assert dice(pred, gt) == pytest.approx(0.4)
    rng = np.random.default_rng(5)
    a, b = rng.random(200) < 0.3, rng.random(200) < 0.4
    assert dice(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(f1_score(b, a))


def test_confusion_counts_match_sklearn_order():
    rng = np.random.default_rng(6)
    pred, gt = rng.random(300) < 0.3, rng.random(300) < 0.2
    tn, fp, fn, tp = confusion_matrix(gt, pred, labels=[0, 1]).ravel()  # sklearn: (y_true, y_pred)
    assert confusion_counts(torch.from_numpy(pred), torch.from_numpy(gt)) == {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def test_ratios_definitions():
    r = ratios(tp=6, fp=2, fn=4, tn=88)
    assert r["dice"] == pytest.approx(12 / 18)
    assert r["precision"] == pytest.approx(6 / 8) and r["recall"] == pytest.approx(6 / 10)
    assert r["specificity"] == pytest.approx(88 / 90)
    assert r["fpr"] == pytest.approx(2 / 90)  # the real false-positive rate
    assert r["fdr"] == pytest.approx(2 / 8)  # what the published code calls "FPR"
    assert r["accuracy"] == pytest.approx(94 / 100)
    nothing = ratios(tp=0, fp=0, fn=5, tn=95)
    assert nothing["precision"] == 0.0 and math.isnan(nothing["fdr"]) and nothing["dice"] == 0.0
    healthy = ratios(tp=0, fp=3, fn=0, tn=97)
    assert math.isnan(healthy["recall"]) and healthy["dice"] == 0.0


def test_mean_std_is_nanmean_population_std():
    values = [0.2, math.nan, 0.5, 0.9]
    stat = mean_std(values)
    assert stat["mean"] == pytest.approx(np.nanmean(values)) and stat["std"] == pytest.approx(np.nanstd(values))
    assert stat["n"] == 3
    assert mean_std([math.nan])["n"] == 0 and math.isnan(mean_std([])["mean"])


@pytest.mark.parametrize("capacity", [0, 10, 10_000])  # grown from nothing, grown from too little, reserved
def test_collected_pool_equals_the_pool_of_its_parts(capacity):
    """Volumes streamed into one buffer (the evaluation's validation pool) hold exactly the voxels of
    the pooled parts: different minima, ties, signed scores, a volume without positives."""
    rng = np.random.default_rng(10)
    parts = [random_case(rng, 300, ties=True, zeros=True) for _ in range(3)]
    parts.append((np.round(rng.normal(0, 1, 200), 1).astype(np.float32), rng.random(200) < 0.3))
    parts.append((np.full(50, 0.5, np.float32), np.zeros(50, bool)))
    as_torch = [(torch.from_numpy(s), torch.from_numpy(np.asarray(g))) for s, g in parts]
    want = PooledScores.pool([PooledScores.from_scores(s, g) for s, g in as_torch])
    got = PooledScores.collect(iter(as_torch), capacity)
    assert (got.lowest, got.n_lowest, got.dtype) == (want.lowest, want.n_lowest, want.dtype)
    assert torch.equal(got.values, want.values) and torch.equal(got.positives, want.positives)
    with pytest.raises(ValueError):
        PooledScores.collect(iter([]))
    with pytest.raises(ValueError):
        PooledScores.collect([as_torch[0], (as_torch[1][0].double(), as_torch[1][1])])
