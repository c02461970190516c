"""Bootstrap CI and paired tests."""

import numpy as np
import pytest
from scipy import stats as sps

from medvl.metrics import stats


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    x = np.random.default_rng(3).random(200)
    a = stats.bootstrap_ci(x, seed=7)
    b = stats.bootstrap_ci(x, seed=7)
    c = stats.bootstrap_ci(x, seed=8)
    assert a == b and (a["low"], a["high"]) != (c["low"], c["high"])
    assert a["low"] < a["mean"] < a["high"] and a["mean"] == pytest.approx(x.mean())
    assert a["n_resamples"] == 1000
    # equals scipy's own percentile bootstrap with the same generator
    ref = sps.bootstrap((x,), np.mean, n_resamples=1000, method="percentile", rng=np.random.default_rng(7))
    assert (a["low"], a["high"]) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))


def test_bootstrap_ci_edge_cases():
    assert stats.bootstrap_ci([1, 1, 1])["low"] == 1.0
    one = stats.bootstrap_ci([0.4])
    assert one["low"] is None and one["mean"] == 0.4
    with pytest.raises(ValueError):
        stats.bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        stats.bootstrap_ci([0.1, float("nan")])


def test_mcnemar_for_binary_scores():
    a = [1] * 10 + [0] * 10 + [1] * 2
    b = [1] * 10 + [1] * 10 + [0] * 2      # b alone right 10 times, a alone right 2 times
    out = stats.paired_test(a, b)
    assert out["test"].startswith("exact McNemar")
    assert out["only_a_correct"] == 2 and out["only_b_correct"] == 10
    assert out["p_value"] == pytest.approx(sps.binomtest(2, 12, 0.5).pvalue)
    assert stats.paired_test([1, 0], [1, 0])["p_value"] == 1.0


def test_paired_bootstrap_for_continuous_scores():
    rng = np.random.default_rng(0)
    a = rng.random(300)
    b = a + 0.05 + rng.normal(0, 0.05, 300)
    out = stats.paired_test(a, b, seed=1)
    assert out["test"].startswith("paired bootstrap") and out["p_value"] < 0.01
    assert out["diff_ci_low"] < out["mean_diff"] < out["diff_ci_high"]
    assert stats.paired_test(a, b, seed=1) == out
    same = stats.paired_test(a, a + rng.normal(0, 0.05, 300), seed=1)
    assert same["p_value"] > 0.01
    with pytest.raises(ValueError, match="same samples"):
        stats.paired_test([0.1, 0.2], [0.1])
