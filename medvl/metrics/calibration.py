"""Calibration of confidences against 0/1 correctness: expected calibration error with its reliability table, and the
risk-coverage curve of abstaining below a confidence.

Why: an accuracy says how often a model is right, not whether its confidence tells right from wrong answers. A
clinician-facing model that is 90% sure and right 60% of the time is worse than its accuracy suggests; a model
whose confident answers are right can abstain on the rest (selective prediction).

Inputs are parallel lists: `confidences` in [0, 1] (the probability the model gave to the answer it gave) and
`correct` in {0, 1} (whether that answer is right). Pure functions; bad input raises ValueError naming the sample.

Bins (`reliability_bins`, `expected_calibration_error`): `n_bins` equal-width bins over [0, 1] (default 10); bin k
holds the confidences in [k/B, (k+1)/B), the last bin also holds 1.0 (sklearn's calibration_curve(strategy=
"uniform") bins the same way, except for a confidence exactly on an inner edge, where its float edges differ by
one ulp). ECE = sum over bins of (bin count / n) * |bin accuracy - bin mean confidence|; empty bins add nothing.

Risk-coverage (`risk_coverage`): the model answers when its confidence is >= a threshold t and abstains below it.
Each distinct confidence is a threshold (tied confidences are kept or dropped together: one threshold cannot split
them), from the highest to the lowest. Coverage = answered / n, selective accuracy = accuracy of the answered,
risk = 1 - selective accuracy. AURC = the area under the risk-coverage step curve: sum over the thresholds of
(samples that threshold adds / n) * its risk; with no ties that is the mean over k = 1..n of the risk of the k
most confident samples (Geifman et al., 2018). Lower is better; a model whose confidence ranks every right answer
above every wrong one reaches the minimum for its accuracy.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from typing import Sequence

DEFAULT_BINS = 10


def _check(confidences: Sequence[float], correct: Sequence[float]) -> tuple[list[float], list[float]]:
    if len(confidences) != len(correct):
        raise ValueError(f"confidences and correct differ in length: {len(confidences)} vs {len(correct)}")
    if not confidences:
        raise ValueError("calibration needs at least one sample")
    conf, ok = [], []
    for i, (c, y) in enumerate(zip(confidences, correct)):
        c, y = float(c), float(y)
        if math.isnan(c) or not 0.0 <= c <= 1.0:
            raise ValueError(f"sample {i}: confidence {c!r} is not a probability in [0, 1]")
        if y not in (0.0, 1.0):
            raise ValueError(f"sample {i}: correctness {y!r} is not 0 or 1")
        conf.append(c)
        ok.append(y)
    return conf, ok


def reliability_bins(confidences: Sequence[float], correct: Sequence[float], n_bins: int = DEFAULT_BINS) -> list[dict]:
    """Per equal-width bin: {"lower", "upper", "count", "mean_confidence", "accuracy"} (the last two None when
    the bin is empty). The data of a reliability diagram."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf, ok = _check(confidences, correct)
    edges = [k / n_bins for k in range(n_bins + 1)]
    sums = [[0, 0.0, 0.0] for _ in range(n_bins)]  # count, sum of confidence, sum of correct
    for c, y in zip(conf, ok):
        k = min(bisect_right(edges, c) - 1, n_bins - 1)
        sums[k][0] += 1
        sums[k][1] += c
        sums[k][2] += y
    return [{"lower": edges[k], "upper": edges[k + 1], "count": n,
             "mean_confidence": s_c / n if n else None, "accuracy": s_y / n if n else None}
            for k, (n, s_c, s_y) in enumerate(sums)]


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[float],
                               n_bins: int = DEFAULT_BINS) -> float:
    """ECE over `n_bins` equal-width bins (module docstring)."""
    bins = reliability_bins(confidences, correct, n_bins)
    n = sum(b["count"] for b in bins)
    return sum(b["count"] / n * abs(b["accuracy"] - b["mean_confidence"]) for b in bins if b["count"])


def risk_coverage(confidences: Sequence[float], correct: Sequence[float]) -> dict:
    """{"points": [{"threshold", "coverage", "n_answered", "selective_accuracy", "risk"}, ...] from the highest
    threshold (fewest answered) to the lowest (all answered), "aurc"} (module docstring)."""
    conf, ok = _check(confidences, correct)
    n = len(conf)
    order = sorted(range(n), key=lambda i: -conf[i])
    points, right, k, aurc = [], 0.0, 0, 0.0
    while k < n:
        t = conf[order[k]]
        start = k
        while k < n and conf[order[k]] == t:  # a tie is answered or abstained on as a whole
            right += ok[order[k]]
            k += 1
        risk = 1.0 - right / k
        aurc += (k - start) / n * risk
        points.append({"threshold": t, "coverage": k / n, "n_answered": k, "selective_accuracy": right / k,
                       "risk": risk})
    return {"points": points, "aurc": aurc}


def calibration_summary(confidences: Sequence[float], correct: Sequence[float], n_bins: int = DEFAULT_BINS) -> dict:
    """Everything the tables and the report show: n, accuracy, mean confidence, ECE, the bin table, risk-coverage."""
    conf, ok = _check(confidences, correct)
    bins = reliability_bins(conf, ok, n_bins)
    n = len(conf)
    return {"n": n, "accuracy": sum(ok) / n, "mean_confidence": sum(conf) / n, "n_bins": n_bins,
            "ece": sum(b["count"] / n * abs(b["accuracy"] - b["mean_confidence"]) for b in bins if b["count"]),
            "bins": bins, "risk_coverage": risk_coverage(conf, ok)}
