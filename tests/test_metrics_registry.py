"""The metric registry: one entry per reported metric, read by evaluation, tables and plots; old names still read."""

import pytest

from medvl.metrics import closed, text
from medvl.metrics.references import best_of
from medvl.metrics.registry import (APPLIES_TO, BLEU, GROUNDING, HEADLINE, METRICS, TEXT_PER_SAMPLE, applies,
                                    canonical, label, names)

PREDS = ["The liver.", "no", "left lung"]
REFS = ["liver", "yes", "right lung"]


def test_every_metric_is_complete():
    for m in METRICS.values():
        assert m.label and m.definition and callable(m.fn), m.name
        assert m.applies_to in APPLIES_TO and isinstance(m.higher_is_better, bool), m.name
    assert len({m.label for m in METRICS.values()}) == len(METRICS)  # the tables map labels back to names
    assert METRICS["mean_centre_point_error_px_boxed_only"].higher_is_better is False
    assert HEADLINE == ("closed_accuracy", "exact_match", "token_f1", "rouge_l", "bertscore_f1", "mean_iou")


def test_per_sample_entries_are_the_reference_functions():
    assert METRICS["token_f1"].fn is text.token_f1 and METRICS["closed_accuracy"].fn is closed.closed_accuracy
    assert "token_f1" in TEXT_PER_SAMPLE and "word_f1" not in METRICS
    for name in TEXT_PER_SAMPLE:
        scores = METRICS[name].fn(PREDS, REFS)
        assert len(scores) == len(PREDS) and all(0.0 <= s <= 1.0 for s in scores), name
    assert METRICS["exact_match"].fn(PREDS, REFS) == [1.0, 0.0, 0.0]
    # several accepted answers: the best match, as evaluation scores them
    assert best_of(METRICS["token_f1"].fn, ["gi"], [["gastrointestinal", "gi tract"]]) == [pytest.approx(2 / 3)]


def test_applicability():
    assert applies("closed_accuracy", {"closed"}, False) and not applies("closed_accuracy", {"closed", "open"}, False)
    assert all(applies(b, {"open"}, False) and not applies(b, {"closed"}, False) for b in BLEU)
    assert applies("yes_no_f1", {"closed"}, True) and not applies("yes_no_f1", {"closed"}, False)
    assert applies("meteor", {"closed", "open"}, False) and applies("token_f1", {"closed"}, False)
    assert set(GROUNDING) == set(names(applies_to="grounding"))


def test_old_names_map_to_current():
    assert canonical("word_f1") == "token_f1" and canonical("rouge_l") == "rouge_l"
    assert label("word_f1") == "token F1" and label("not_a_metric") == "not_a_metric"
