"""Uncertainty of a mean score and paired significance tests between two models on the same samples.

Why: medical VQA test sets are small (VQA-RAD has ~450 test questions), so a 1-2 point difference between
models is often noise. Every table number should carry a confidence interval, and a claim "model B beats
model A" a paired test on the same samples (pairing removes the per-question difficulty variance).
Both are seeded and therefore reproducible.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats as sps


def _as_scores(x: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a flat list of per-sample scores")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: per-sample scores contain NaN/inf or None")
    return arr


def bootstrap_ci(scores: Sequence[float], *, n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> dict:
    """Percentile-bootstrap confidence interval of the mean (scipy.stats.bootstrap, seeded).

    Percentile rather than BCa: BCa is undefined (NaN plus a warning) when all scores are equal, which is
    common for accuracy on a small category. With fewer than 2 samples no interval exists: low/high are None.
    """
    arr = _as_scores(scores, "scores")
    if arr.size == 0:
        raise ValueError("cannot bootstrap zero scores")
    out = {"mean": float(arr.mean()), "low": None, "high": None, "n": int(arr.size), "confidence": confidence,
           "n_resamples": n_resamples, "seed": seed, "method": "percentile bootstrap (scipy.stats.bootstrap)"}
    if arr.size < 2:
        out["note"] = "fewer than 2 samples: no interval"
        return out
    if np.all(arr == arr[0]):  # every resample has the same mean
        out["low"] = out["high"] = out["mean"]
        return out
    res = sps.bootstrap((arr,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                        method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    out["low"], out["high"] = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return out


def _is_binary(arr: np.ndarray) -> bool:
    return bool(np.all((arr == 0) | (arr == 1)))


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> dict:
    """Exact (binomial) McNemar test on paired 0/1 scores: only discordant pairs carry information."""
    x, y = _as_scores(a, "scores_a"), _as_scores(b, "scores_b")
    if not (_is_binary(x) and _is_binary(y)):
        raise ValueError("McNemar needs 0/1 per-sample scores")
    only_a = int(np.sum((x == 1) & (y == 0)))
    only_b = int(np.sum((x == 0) & (y == 1)))
    n_disc = only_a + only_b
    p = 1.0 if n_disc == 0 else float(sps.binomtest(only_a, n_disc, 0.5, alternative="two-sided").pvalue)
    return {"test": "exact McNemar (scipy.stats.binomtest on discordant pairs)", "p_value": p,
            "only_a_correct": only_a, "only_b_correct": only_b}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, n_resamples: int = 10000, seed: int = 0,
                     confidence: float = 0.95) -> dict:
    """Two-sided paired bootstrap test of mean(b - a) = 0, and a percentile CI of the mean difference.

    The bootstrap distribution of the mean difference is shifted to the null (centred on 0):
    p = (1 + #{|mean*_k - mean| >= |mean|}) / (n_resamples + 1), so p is never exactly 0.
    """
    x, y = _as_scores(a, "scores_a"), _as_scores(b, "scores_b")
    d = y - x
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    n = d.size
    exceed = 0
    for start in range(0, n_resamples, 1000):  # chunks keep memory at 1000 x n indices
        k = min(1000, n_resamples - start)
        means = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
        exceed += int(np.sum(np.abs(means - observed) >= abs(observed)))
    p = 1.0 if observed == 0 else (1 + exceed) / (n_resamples + 1)
    ci = bootstrap_ci(d, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return {"test": "paired bootstrap (shifted to the null)", "p_value": float(min(1.0, p)),
            "diff_ci_low": ci["low"], "diff_ci_high": ci["high"], "n_resamples": n_resamples, "seed": seed}


def paired_test(scores_a: Sequence[float], scores_b: Sequence[float], *, test: str = "auto",
                n_resamples: int = 10000, seed: int = 0) -> dict:
    """Compare two models scored on the same samples (same order).

    test="auto": exact McNemar when both score lists are 0/1 (accuracy-like), else the paired bootstrap.
    Returns {"test", "p_value", "n", "mean_a", "mean_b", "mean_diff" (b - a), ...test-specific fields}.
    """
    x, y = _as_scores(scores_a, "scores_a"), _as_scores(scores_b, "scores_b")
    if x.size != y.size:
        raise ValueError(f"paired test needs the same samples: {x.size} vs {y.size} scores")
    if x.size < 2:
        raise ValueError("paired test needs at least 2 samples")
    if test == "auto":
        test = "mcnemar" if _is_binary(x) and _is_binary(y) else "bootstrap"
    if test == "mcnemar":
        res = mcnemar_exact(x, y)
    elif test == "bootstrap":
        res = paired_bootstrap(x, y, n_resamples=n_resamples, seed=seed)
    else:
        raise ValueError(f"unknown test {test!r}: use 'auto', 'mcnemar' or 'bootstrap'")
    return {"n": int(x.size), "mean_a": float(x.mean()), "mean_b": float(y.mean()),
            "mean_diff": float(y.mean() - x.mean()), **res}
