"""Normalisation, yes/no extraction, string-overlap and closed-ended scores on hand-computed cases."""

import pytest

from medvl.metrics import closed, text
from medvl.metrics.normalize import normalize_answer, tokens, yes_no


@pytest.mark.parametrize("raw, norm", [
    ("Yes.", "yes"),
    ("  The   Liver!! ", "liver"),
    ("isn't", "isnt"),
    ("2.5 cm", "2 5 cm"),          # decimal point is a separator, so never equal to "25 cm"
    ("X-ray", "x ray"),
    ("ＣＴ scan", "ct scan"),        # NFKC full-width
    ("an apple a day", "apple day"),
])
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_tokens_keep_articles():
    assert tokens("The liver, a big one", keep_articles=True) == ["the", "liver", "a", "big", "one"]


@pytest.mark.parametrize("answer, expected", [
    ("yes", "yes"), ("Yes.", "yes"), ("YES, there is", "yes"), ("Yeah", "yes"), ("correct", "yes"),
    ("no", "no"), ("No.", "no"), ("No, it is not", "no"), ("nope", "no"),
    ("Yes, there is no fracture", None),   # contradiction
    ("yes, it isn't", None),
    ("no yes", None),
    ("There is a fracture", None),         # no leading yes/no word
    ("right", None), ("positive", None), ("", None), ("...", None),
])
def test_yes_no(answer, expected):
    assert yes_no(answer) == expected


def test_exact_soft_substring():
    preds = ["The liver.", "liver", "abnormal", "left lung", ""]
    refs = ["liver", "kidney", "no", "lung", "yes"]
    assert text.exact_match(preds, refs) == [1.0, 0.0, 0.0, 0.0, 0.0]
    # substring on word boundaries: "no" is not found in "abnormal"
    assert text.substring_match(preds, refs) == [1.0, 0.0, 0.0, 1.0, 0.0]
    soft = text.soft_match(["liver"], ["livers"])
    assert soft == [pytest.approx(2 * 5 / 11)]


def test_word_overlap_and_contain():
    preds = ["small nodule in right lung", "nodule", "lung lung"]
    refs = ["nodule in left lung", "nodule in left lung", "lung"]
    # ref words {nodule, in, left, lung}: 3/4 found; 1/4; 1/1
    assert text.word_overlap(preds, refs) == [0.75, 0.25, 1.0]
    assert text.word_contain(preds, refs) == [0.0, 0.0, 1.0]


def test_token_f1_hand_computed():
    # pred tokens [small, nodule, in, right, lung] (5), ref [nodule, in, left, lung] (4), common 3
    p, r, f = (fn(["A small nodule in the right lung"], ["nodule in the left lung"])[0]
               for fn in (text.word_precision, text.word_recall, text.token_f1))
    assert p == pytest.approx(3 / 5) and r == pytest.approx(3 / 4)
    assert f == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    # multiplicity counts (bag, not set): pred "lung lung" vs ref "lung": P = 1/2, R = 1
    assert text.word_precision(["lung lung"], ["lung"]) == [0.5]
    assert text.token_f1(["lung lung"], ["lung"]) == [pytest.approx(2 / 3)]
    # SQuAD convention: reference normalising to nothing
    assert text.token_f1(["the"], ["a"]) == [1.0] and text.token_f1(["liver"], ["the"]) == [0.0]
    assert text.token_f1([""], ["liver"]) == [0.0]


def test_char_prf_hand_computed():
    # "ab c" -> chars [a,b,c]; "abd" -> [a,b,d]; common 2
    assert text.char_precision(["ab c"], ["abd"]) == [pytest.approx(2 / 3)]
    assert text.char_recall(["ab"], ["abd"]) == [pytest.approx(2 / 3)]
    assert text.char_f1(["ab"], ["abd"]) == [pytest.approx(0.8)]


def test_average_and_input_checks():
    assert text.average([1.0, 0.0, 0.5]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        text.average([])
    with pytest.raises(ValueError, match="length"):
        text.exact_match(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="sample 1: reference answer is empty"):
        text.exact_match(["a", "b"], ["a", "  "])
    with pytest.raises(TypeError, match="sample 0: prediction"):
        text.exact_match([None], ["a"])


def test_closed_accuracy():
    preds = ["Yes, there is", "no", "maybe", "Left", "left lung"]
    refs = ["yes", "Yes", "no", "left", "left"]
    assert closed.closed_accuracy(preds, refs) == [1.0, 0.0, 0.0, 1.0, 0.0]


def test_yes_no_prf_invalid_policy():
    preds = ["yes", "yes", "no", "no", "maybe", "I think so"]
    refs = ["yes", "no", "yes", "no", "yes", "no"]
    out = closed.yes_no_prf(preds, refs)
    # invalid "maybe" (ref yes) -> FN; invalid "I think so" (ref no) -> FP
    assert (out["tp"], out["fp"], out["fn"], out["tn"], out["n_invalid"]) == (1, 2, 2, 1, 2)
    assert out["precision"] == pytest.approx(1 / 3) and out["recall"] == pytest.approx(1 / 3)
    assert out["f1"] == pytest.approx(1 / 3)
    assert out["accuracy"] == pytest.approx(2 / 6) == text.average(closed.yes_no_correct(preds, refs))
    with pytest.raises(ValueError, match="not a yes/no answer"):
        closed.yes_no_prf(["yes"], ["liver"])


def test_yes_no_prf_undefined_is_none_not_zero():
    out = closed.yes_no_prf(["no", "no"], ["no", "no"])
    assert out["precision"] is None and out["recall"] is None and out["f1"] is None and out["accuracy"] == 1.0
