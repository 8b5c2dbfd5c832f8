"""Segmentation and detection metrics of the evaluation protocol (protocol §5.2 steps 4, 8).

Conventions (the published ones unless said otherwise):

- Scores are compared in their own dtype: ``A > t`` rounds ``t`` to float32 for float32 maps,
  as NumPy 1.x and torch did in the published code.
- ``dice`` = 2|P∩G| / (|P| + |G|); **NaN when both are empty** (the published ``dice`` divides
  0 by 0; the aggregate ``nanmean`` then skips the volume).
- ``precision`` = TP / (TP + FP), **0 when nothing is predicted** (the published value comes
  from scikit-learn's ``precision_recall_fscore_support``, whose default is 0 there).
- ``recall`` (= TPR), ``specificity``, ``fpr`` = FP / (FP + TN) (the correct false-positive
  rate), ``fdr`` = FP / (FP + TP) (what the published code logs as "FPR") and ``accuracy``
  are NaN when their denominator is 0.
- AUPRC is scikit-learn's ``average_precision_score`` (step-wise, no interpolation) and AUROC
  its ``roc_auc_score`` (trapezoidal ROC, as the published ``roc_curve`` + ``auc``), over all
  voxels given, with ties grouped by distinct score value. Both are NaN when the ground truth
  has no positive voxel (AUROC also when it has no negative voxel).

:class:`RankedScores` sorts a volume (or a pool of volumes) once; AUPRC, AUROC and the exact and
FPR threshold searches (:mod:`mddpm.evaluation.threshold`) then read counts from it by binary
search. The published bisection needs only 20 counts and runs on the unsorted
:class:`PooledScores` (no sort: one pass per count).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from mddpm.kernels import score_passes

COUNT_NAMES = ("tp", "fp", "fn", "tn")
RATIO_NAMES = ("dice", "precision", "recall", "specificity", "fpr", "fdr", "accuracy")


def _sort(x: torch.Tensor) -> torch.Tensor:
    """Ascending sort of a 1-D tensor (numpy's SIMD sort on the CPU: ~2× torch's there)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy()))
    return torch.sort(x).values


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat`` of 1-D tensors (NumPy on the CPU: ~3× torch's single-threaded copy)."""
    if parts[0].device.type == "cpu":
        return torch.from_numpy(np.concatenate([p.numpy() for p in parts]))
    return torch.cat(parts)


def _merge_sorted(parts: list[torch.Tensor]) -> torch.Tensor:
    """Ascending sort of the concatenation of sorted 1-D tensors (on the CPU numpy's stable sort,
    a timsort that merges the sorted runs: ~4× a fresh sort)."""
    joined = _cat(parts)
    if joined.device.type == "cpu":
        return torch.from_numpy(np.sort(joined.numpy(), kind="stable"))
    return torch.sort(joined).values


def select(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``x[keep]`` for 1-D ``x`` and a bool ``keep`` (on the CPU NumPy's ``take`` of ``flatnonzero``:
    ~4× its boolean indexing and ~8× torch's for the scattered masks of score maps)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.take(x.numpy(), np.flatnonzero(keep.numpy())))
    return x[keep]


def select_between(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """The elements of 1-D ``x`` in [lo, hi], in order (NumPy on the CPU)."""
    if x.device.type == "cpu":
        a = x.numpy()
        return torch.from_numpy(np.take(a, np.flatnonzero((a >= lo) & (a <= hi))))
    return x[(x >= lo) & (x <= hi)]


def as_numpy(x: torch.Tensor) -> np.ndarray:
    """A NumPy view (CPU) or copy (other devices) of ``x``; bfloat16 becomes float32."""
    x = x.detach()
    return (x.float() if x.dtype == torch.bfloat16 else x).cpu().numpy()


def _split_scores(s: torch.Tensor, positive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(scores above the minimum, scores where ``positive``, the minimum) of 1-D ``s``, −0 as +0
    (compiled passes on the CPU)."""
    if s.device.type == "cpu" and s.dtype != torch.bfloat16:
        x, pos = s.numpy(), positive.numpy()
        zero = x.dtype.type(0)
        lowest = x.min() + zero
        values = np.empty(score_passes.count_greater(x, lowest) + 1, x.dtype)
        positives = np.empty(np.count_nonzero(pos) + 1, x.dtype)
        score_passes.split_into(x, pos, zero, lowest, values, positives)
        return torch.from_numpy(values[:-1]), torch.from_numpy(positives[:-1]), lowest.item()
    s = s + 0.0  # turns -0.0 into 0.0, so equal scores count as one value
    lowest = s.min().item()
    return select(s, s > lowest), select(s, positive), lowest


def _flat_pair(scores: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, gt > 0), flattened; refuses different shapes and empty scores."""
    if scores.shape != gt.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    if scores.numel() == 0:
        raise ValueError("no voxels to rank")
    return scores.reshape(-1), gt.reshape(-1) if gt.dtype == torch.bool else gt.reshape(-1) > 0


def _room(buf: np.ndarray, used: int, extra: int) -> np.ndarray:
    """``buf`` with room for ``extra`` elements after its first ``used`` (doubled and copied when too small)."""
    if buf.size >= used + extra:
        return buf
    grown = np.empty(max(2 * buf.size, used + extra), buf.dtype)
    grown[:used] = buf[:used]
    return grown


def count_greater(x: torch.Tensor, q: torch.Tensor) -> int:
    """Number of elements of 1-D ``x`` greater than the 1-element ``q``: one pass (compiled on the CPU)."""
    if x.device.type == "cpu":
        return int(score_passes.count_greater(x.numpy(), q.numpy()[0]))
    return int(torch.count_nonzero(x > q).item())


def count_greater_sorted(x: torch.Tensor, q: torch.Tensor) -> int:
    """:func:`count_greater` for ascending ``x``, by binary search."""
    return x.numel() - int(torch.searchsorted(x, q, right=True).item())


def round_to_dtype(t: float, dtype: torch.dtype) -> float:
    """``t`` rounded to ``dtype`` (the value a comparison with a ``dtype`` map really uses)."""
    return torch.tensor(t, dtype=torch.float64).to(dtype).item()


@dataclass
class PooledScores:
    """Scores split by label, unsorted, for a few exact counts (each one pass over the voxels).

    ``values`` are the scores above the overall minimum ``lowest`` (the minimum's voxels,
    typically the many background zeros, are only counted: ``n_lowest``); ``positives`` the
    scores of the voxels with ground truth > 0. Building it costs one selection pass, no sort:
    the published bisection needs only 20 counts, so it runs on this directly.
    """

    values: torch.Tensor
    positives: torch.Tensor
    lowest: float
    n_lowest: int
    dtype: torch.dtype

    @classmethod
    def from_scores(cls, scores: torch.Tensor, gt: torch.Tensor):
        """From finite float ``scores`` and ``gt`` of the same shape (any; flattened), at least one voxel."""
        s, positive = _flat_pair(scores, gt)
        values, positives, lowest = _split_scores(s, positive)
        return cls(values=values, positives=positives, lowest=lowest, n_lowest=s.numel() - values.numel(),
                   dtype=s.dtype)

    _join = staticmethod(lambda parts: _cat(parts))  # joins the parts' 1-D value arrays when pooling

    @classmethod
    def pool(cls, parts: list):
        """All voxels of ``parts`` together (as if their scores were concatenated)."""
        if not parts:
            raise ValueError("nothing to pool")
        if len({p.dtype for p in parts}) != 1:
            raise ValueError("cannot pool scores of different dtypes")
        lowest = min(p.lowest for p in parts)
        values = [p.values for p in parts]
        values += [p.values.new_full((p.n_lowest,), p.lowest) for p in parts if p.lowest > lowest]
        return cls(values=cls._join(values), positives=cls._join([p.positives for p in parts]), lowest=lowest,
                   n_lowest=sum(p.n_lowest for p in parts if p.lowest == lowest), dtype=parts[0].dtype)

    @classmethod
    def collect(cls, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], capacity: int = 0) -> "PooledScores":
        """``pool([from_scores(s, g) for s, g in pairs])`` built while the pairs stream past: on the CPU
        each volume's voxels above its minimum and its positives go straight into one buffer each (no
        per-volume arrays, no final concatenation). ``capacity``: voxels expected in all (a bound: the
        buffers are reserved, not touched, and grow when it is too small)."""
        pairs = iter(pairs)
        first = next(pairs, None)
        if first is None:
            raise ValueError("nothing to pool")
        pairs = itertools.chain([first], pairs)
        if cls is not PooledScores or first[0].device.type != "cpu" or first[0].dtype == torch.bfloat16:
            return cls.pool([cls.from_scores(s, g) for s, g in pairs])
        dtype = first[0].dtype
        values, positives = (np.empty(capacity, as_numpy(first[0]).dtype) for _ in range(2))
        n = m = 0
        parts = []  # (lowest, voxels at it) per volume
        for scores, gt in pairs:
            if scores.dtype != dtype:
                raise ValueError("cannot pool scores of different dtypes")
            s, positive = _flat_pair(scores, gt)
            x, pos = s.numpy(), positive.numpy()
            zero = x.dtype.type(0)
            lowest = x.min() + zero
            above, lesion = score_passes.count_greater(x, lowest), np.count_nonzero(pos)
            values, positives = _room(values, n, above + 1), _room(positives, m, lesion + 1)
            score_passes.split_into(x, pos, zero, lowest, values[n:], positives[m:])
            n, m = n + above, m + lesion
            parts.append((lowest.item(), x.size - above))
        lowest = min(low for low, _ in parts)
        fill = [np.full(count, low, values.dtype) for low, count in parts if low > lowest]
        return cls(values=torch.from_numpy(np.concatenate([values[:n], *fill]) if fill else values[:n]),
                   positives=torch.from_numpy(positives[:m]), lowest=lowest,
                   n_lowest=sum(count for low, count in parts if low == lowest), dtype=dtype)

    def ranked(self) -> "RankedScores":
        """The same voxels sorted (for AUPRC, AUROC, the exact and FPR thresholds)."""
        return RankedScores(values=_sort(self.values), positives=_sort(self.positives), lowest=self.lowest,
                            n_lowest=self.n_lowest, dtype=self.dtype)

    @property
    def n_voxels(self) -> int:
        return self.values.numel() + self.n_lowest

    @property
    def n_positive(self) -> int:
        return self.positives.numel()

    @property
    def highest(self) -> float:
        if not self.values.numel():
            return self.lowest
        return self.values.numpy().max().item() if self.values.device.type == "cpu" else self.values.max().item()

    _count = staticmethod(count_greater)

    def count_above(self, t: float) -> tuple[int, int]:
        """(voxels, positive voxels) with score > ``t`` (``t`` rounded to the scores' dtype)."""
        q = torch.tensor([round_to_dtype(t, self.dtype)], dtype=self.dtype, device=self.values.device)
        n = self._count(self.values, q) + (self.n_lowest if self.lowest > q.item() else 0)
        return n, self._count(self.positives, q)


@dataclass
class RankedScores(PooledScores):
    """:class:`PooledScores` with ``values`` and ``positives`` sorted ascending: one sort, then
    counts at any threshold by binary search and every distinct threshold at once (:meth:`curve`)."""

    @classmethod
    def from_scores(cls, scores: torch.Tensor, gt: torch.Tensor) -> "RankedScores":
        """From finite float ``scores`` and ``gt`` of the same shape (any; flattened), at least one voxel."""
        return PooledScores.from_scores(scores, gt).ranked()

    _join = staticmethod(_merge_sorted)  # pooling merges the sorted parts: cheaper than a fresh sort

    def ranked(self) -> "RankedScores":
        return self

    @property
    def highest(self) -> float:
        return self.values[-1].item() if self.values.numel() else self.lowest

    _count = staticmethod(count_greater_sorted)

    def curve(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every distinct score, descending, with the counts of voxels scoring at least it.

        Returns (values [m], predicted [m], true positives [m]); the last entry is ``lowest``
        (everything predicted). Counts are int64.
        """
        distinct, counts = torch.unique_consecutive(self.values, return_counts=True)
        distinct, counts = distinct.flip(0), counts.flip(0)
        low = torch.tensor([self.lowest], dtype=self.dtype, device=distinct.device)
        distinct = torch.cat([distinct, low])
        predicted = torch.cat([counts.cumsum(0), counts.new_full((1,), self.n_voxels)])
        tp = self.n_positive - torch.searchsorted(self.positives, distinct, right=False)
        return distinct, predicted, tp


def average_precision(ranked: RankedScores) -> float:
    """AUPRC as scikit-learn's ``average_precision_score``: Σ (R_i − R_{i−1}) P_i over distinct
    thresholds, descending. NaN without positive voxels."""
    if ranked.n_positive == 0:
        return math.nan
    _, predicted, tp = ranked.curve()
    tp64 = tp.double()
    gained = torch.diff(tp64, prepend=tp64.new_zeros(1))
    return float((gained * tp64 / predicted.double()).sum().item() / ranked.n_positive)


def auroc(ranked: RankedScores) -> float:
    """Area under the ROC curve (trapezoidal, ties grouped) as scikit-learn's ``roc_auc_score``.

    NaN unless there are both positive and negative voxels. Summed exactly in int64 and divided
    once.
    """
    n_neg = ranked.n_voxels - ranked.n_positive
    if ranked.n_positive == 0 or n_neg == 0:
        return math.nan
    _, predicted, tp = ranked.curve()
    fp = predicted - tp
    zero = tp.new_zeros(1)
    area2 = (torch.diff(fp, prepend=zero) * (tp + torch.cat([zero, tp[:-1]]))).sum().item()
    return area2 / (2.0 * ranked.n_positive * n_neg)


def confusion_counts(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, int]:
    """TP, FP, FN, TN of a binary prediction against ground truth (both binarised with > 0)."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    p, g = pred > 0, gt > 0
    if p.device.type == "cpu":  # NumPy's counts: faster than torch's on the CPU (docs/speed.md)
        p, g = p.numpy(), g.numpy()
        tp, n_pred, n_gt = int(np.count_nonzero(p & g)), int(np.count_nonzero(p)), int(np.count_nonzero(g))
    else:
        tp, n_pred, n_gt = int((p & g).sum().item()), int(p.sum().item()), int(g.sum().item())
    fp, fn = n_pred - tp, n_gt - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": pred.numel() - tp - fp - fn}


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def ratios(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Dice, precision, recall, specificity, FPR, FDR and accuracy from counts (module conventions)."""
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": tp / (tp + fp) if tp + fp > 0 else 0.0,
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "fpr": _ratio(fp, fp + tn),
        "fdr": _ratio(fp, fp + tp),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
    }


def dice(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Dice of two binary masks (binarised with > 0); NaN when both are empty (as published)."""
    return ratios(**confusion_counts(pred, gt))["dice"]


def binarise(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """``scores > threshold`` with the threshold rounded to the scores' dtype (bool tensor)."""
    return scores > round_to_dtype(threshold, scores.dtype)


def mean_std(values) -> dict[str, float | int]:
    """``np.nanmean`` and population ``np.nanstd`` (as published) and the number of non-NaN values."""
    arr = np.asarray(list(values), dtype=np.float64)
    finite = arr[~np.isnan(arr)]
    if finite.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "n": int(finite.size)}
