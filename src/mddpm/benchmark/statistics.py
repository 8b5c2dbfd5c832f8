"""Statistics of Table 1: mean ± std across runs and the paired Wilcoxon signed-rank test."""

from __future__ import annotations

import math
import warnings

import numpy as np

MIN_PAIRS = 6  # fewer pairs give no p-value: the smallest two-sided p of n pairs is 2 / 2**n (0.0625 at n = 5)
NO_P = (f"no p-value from fewer than {MIN_PAIRS} pairs: with n pairs the two-sided signed-rank test cannot go "
        "below 2/2^n (0.0625 at n = 5), so it could not show a difference whatever the data")


def across_runs(values: list[float | None]) -> dict:
    """Mean and std across runs of per-run values (None/NaN skipped): population (``std``) and sample
    (``std_sample``, ddof 1) std, the count and the values themselves."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    out = {"mean": None, "std": None, "std_sample": None, "n_runs": int(finite.size), "runs": list(values)}
    if finite.size:
        out.update(mean=float(finite.mean()), std=float(finite.std()))
    if finite.size > 1:
        out["std_sample"] = float(finite.std(ddof=1))
    return out


def _case_value(case: dict, metric: str, rule: str) -> float | None:
    value = case["rules"][rule][metric] if metric == "dice" else case.get(metric)
    return value if value is not None and math.isfinite(value) else None


def paired_wilcoxon(method_runs: dict[str, dict], reference_runs: dict[str, dict], metric: str, rule: str) -> dict:
    """Paired Wilcoxon signed-rank test of per-volume ``metric`` ("dice" at ``rule``, "auprc", "auroc"),
    method against reference. ``*_runs`` map run tag -> metrics dict; pairs are (run, case) present
    in both with finite values on both sides. Returns {"p", "statistic", "n_pairs", "mean_difference",
    "median_difference"} (differences are method − reference; p None from fewer than :data:`MIN_PAIRS`
    pairs, with a "note" saying why)."""
    from scipy.stats import wilcoxon

    x, y = [], []
    for run, metrics in method_runs.items():
        if run not in reference_runs:
            continue
        ref_cases = {c["case_id"]: c for c in reference_runs[run]["cases"]}
        for case in metrics["cases"]:
            other = ref_cases.get(case["case_id"])
            if other is None:
                continue
            a, b = _case_value(case, metric, rule), _case_value(other, metric, rule)
            if a is not None and b is not None:
                x.append(a)
                y.append(b)
    out = {"p": None, "statistic": None, "n_pairs": len(x), "mean_difference": None, "median_difference": None}
    if not x:
        return out
    diff = np.asarray(x) - np.asarray(y)
    out.update(mean_difference=float(diff.mean()), median_difference=float(np.median(diff)))
    if len(x) < MIN_PAIRS:
        return {**out, "note": NO_P}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    p, stat = float(result.pvalue), float(result.statistic)
    out.update(p=p if math.isfinite(p) else None, statistic=stat if math.isfinite(stat) else None)
    return out
