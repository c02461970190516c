"""#16.13 / #16.14 / #16.10: one answer rule (medvl.answers) for converters, training validation and metrics; when a
free-text answer counts as yes/no; one question-categorisation rule (medvl.categories) for data_trans and eval."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from data_process.conversion.text import yes_no as converter_yes_no
from data_process.data_trans import categorize
from medvl.answers import infer_answer_type, is_choice_answer
from medvl.schema import make_record
from eval.categorize import sample_info
from medvl.metrics import closed
from medvl.metrics.normalize import yes_no
from train.validation import generation_scores

CASES = [
    ("No.", "no"), ("no", "no"), ("YES", "yes"), ("  (Yes)", "yes"),
    ("Yes, there is a fracture.", "yes"),        # a leading yes word and a clause of words
    ("No. The liver is normal.", "no"),
    ("No, it is not.", "no"),                    # a negation after "no" agrees with it
    ("Yes, T2 weighted", "yes"),                 # digits inside a word are plain text
    ("Yes, there is no fracture", None),         # contradiction
    ("yes no", None), ("No, yes", None),
    ("no/xq zzk", None),                         # slash continuation: garbage, not a clause
    ("no/", None), ("yes/no", None), ("no-contrast", None), ("no_x", None),
    ("yes<|im_end|>", None), ("no {\"bbox\"", None),
    ("yesterday", None), ("nothing", None), ("right", None), ("", None), ("...", None),
    ("是", "yes"), ("否", "no"), ("是的。", "yes"), ("不包含", "no"), ("存在", "yes"),
    ("都是", None),                              # "both are": a choice answer, not yes
]


@pytest.mark.parametrize("answer, expected", CASES)
def test_yes_no_rule(answer, expected):
    assert yes_no(answer) == expected
    assert converter_yes_no(answer) == expected  # categories and metrics read answers the same way


def test_converter_and_metrics_agree_on_real_answers(shared_data):
    rad = json.loads((shared_data / "vqa_rad" / "VQA_RAD Dataset Public.json").read_text())
    slake = json.loads((shared_data / "slake_sample" / "train.json").read_text())
    answers = {str(r["answer"]) for r in rad + slake}
    assert [a for a in answers if converter_yes_no(a) != yes_no(a)] == []
    assert sum(yes_no(a) is not None for a in answers) >= 2 + 12  # yes/no in both languages


def test_garbage_after_no_is_not_a_correct_no():
    assert closed.closed_accuracy(["no/xq zzk", "no", "No, there is none."], ["no", "no", "no"]) == [0.0, 1.0, 1.0]
    out = closed.yes_no_prf(["no/xq zzk"], ["no"])
    assert (out["n_invalid"], out["tn"]) == (1, 0)


def test_training_validation_uses_the_rule():
    scores = generation_scores(["no/xq zzk", "是的", "Yes, there is a fracture."], ["no", "是", "是"],
                               ["closed"] * 3)
    assert scores["closed_accuracy"] == pytest.approx(2 / 3)


def test_choice_answer_shares_normalisation():
    assert is_choice_answer("Is this an X-ray or a CT?", "x-ray")
    assert is_choice_answer("Is this an MRI or a CT scan?", "The MRI.")
    assert not is_choice_answer("Is this an MRI or a CT scan?", "ultrasound")
    assert not is_choice_answer("What is shown?", "liver")
    assert infer_answer_type("Is there a fracture?", "Yes, there is a fracture.") == "closed"
    assert infer_answer_type("What is shown?", "是") == "closed"


def _rec(question, answer, dataset="slake", **meta):
    return make_record("r", "/img.jpg", question, answer, {"dataset": dataset, "answer_type": "closed", **meta})


@pytest.mark.parametrize("question, answer, meta, expected", [
    ("Which is smaller in this image, liver or right kidney?", "Liver", {"content_type": "Size"}, "general"),
    ("Which is bigger, the left lung or the heart?", "Heart", {"content_type": "Size"}, "general"),
    ("Is the abscess in the left upper quadrant homogenous or heterogenous?", "heterogeneous",
     {"dataset": "vqa_rad", "question_type": "ATTRIB"}, "general"),
    ("Is the lesion on the left or right?", "Left", {"dataset": "other"}, "position"),
    ("Is the largest air collection on the patient's left or the right side?", "Right side", {"dataset": "other"},
     "position"),
    ("Is the cyst in the left kidney or the right kidney?", "left kidney", {"dataset": "other"}, "position"),
    ("Which organ is on the right of the image?", "Liver", {"dataset": "other"}, "position"),  # no choice
    ("Where is the liver, left or right?", "Left", {"dataset": "other"}, "position"),
    ("Which is smaller, liver or right kidney?", "right kidney", {"content_type": "Position"}, "position"),  # native
])
def test_choice_between_structures_is_general(question, answer, meta, expected):
    meta = {"dataset": "slake", **meta}
    record = _rec(question, answer, **meta)
    assert categorize(record)["closed_type"] == expected
    # evaluation falls back to the same rule for an id missing from type_mapping.json (no native labels there)
    if not ({"content_type", "question_type"} & set(meta)):
        row = {"id": "r", "task": "vqa", "question": question, "reference": answer, "answer_type": "closed"}
        assert sample_info(row, {}, Counter())["closed_type"] == expected
