"""Registry and compute_all: names, result shape, loud failure vs explicit skipping."""

import pytest

import medvl.metrics as M
from medvl.metrics import MetricUnavailable, compute_all, text

PREDS = ["The liver.", "no", "left lung"]
REFS = ["liver", "yes", "right lung"]
FAST = ["exact_match", "word_f1", "closed_accuracy", "rouge_l"]


def test_registry_and_shape():
    out = compute_all(PREDS, REFS, include=FAST)
    assert list(out) == FAST
    assert out["exact_match"] == {"score": pytest.approx(1 / 3), "per_sample": [1.0, 0.0, 0.0]}
    assert out["word_f1"]["per_sample"] == text.word_f1(PREDS, REFS)
    assert set(M.DEFAULT_METRICS) >= {"exact_match", "rouge_l", "bleu4", "meteor", "cider"}
    assert not set(M.OPTIONAL_METRICS) & set(M.DEFAULT_METRICS)


def test_unknown_and_bertscore_without_model():
    with pytest.raises(ValueError, match="unknown metrics"):
        compute_all(PREDS, REFS, include=["bleu5"])
    with pytest.raises(ValueError, match="bertscore_model"):
        compute_all(PREDS, REFS, include=["bertscore_f1"])


def test_unavailable_raises_by_default_and_is_listed_when_allowed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no Java
    with pytest.raises(MetricUnavailable):
        compute_all(PREDS, REFS, include=["exact_match", "bleu4"])
    out = compute_all(PREDS, REFS, include=["exact_match", "bleu4", "meteor"], allow_missing=True,
                      bertscore_model=None)
    assert out["exact_match"]["score"] == pytest.approx(1 / 3)
    assert set(out["unavailable"]) == {"bleu4", "meteor"} and "java" in out["unavailable"]["bleu4"]
    assert "bleu4" not in out  # never a number for a metric that did not run


def test_bertscore_unavailable_listed(tmp_path):
    out = compute_all(PREDS, REFS, include=["exact_match", "bertscore_f1"], allow_missing=True,
                      bertscore_model=str(tmp_path / "missing"))
    assert "bertscore_f1" in out["unavailable"] and "bertscore_f1" not in out


def test_coco_metrics_through_compute_all_equal_direct_wrapper():
    from medvl.metrics import nlg

    preds = ["a small nodule in the left lung", "", "the liver is enlarged"]
    refs = ["a nodule in the left lung", "yes", "the liver is enlarged"]
    out = compute_all(preds, refs, include=["bleu4", "cider"])
    direct = nlg.coco_scores(preds, refs, metrics=["bleu4", "cider"])
    for m in ("bleu4", "cider"):
        assert out[m]["score"] == direct[m]["score"] and out[m]["per_sample"] == direct[m]["per_sample"]
    assert "open-ended" in out["bleu4"]["note"]
