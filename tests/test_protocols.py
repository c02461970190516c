"""The scoring protocols (medvl/metrics/protocols/): each scorer on hand-computed cases with its own edge rules, the
same predictions under every protocol, and the generation presets' prompt suffixes."""
from __future__ import annotations

import pytest

from medvl.metrics.protocols import PROTOCOLS, aggregate, parse_names
from eval.generate import apply_preset, prediction_row


def run(name, pred, ref, atype="closed", dataset="vqa_rad"):
    refs = ref if isinstance(ref, list) else [ref]
    return PROTOCOLS[name].score_sample(pred, refs, answer_type=atype, dataset=dataset)


# (prediction, reference(s), answer type, metric, expected)
STRICT = [
    ("yes", "yes", "closed", "accuracy", 1.0),
    ("Yes, there is a fracture.", "yes", "closed", "accuracy", 1.0),
    ("Yes, there is no fracture", "yes", "closed", "accuracy", 0.0),  # contradicted: neither yes nor no
    ("Yes, there is no fracture", "no", "closed", "accuracy", 0.0),
    ("No.", "no", "closed", "accuracy", 1.0),
    ("nope", "no", "closed", "accuracy", 1.0),  # yes/no synonym
    ("true", "yes", "closed", "accuracy", 1.0),
    ("yesterday", "yes", "closed", "accuracy", 0.0),
    ("No, it is not", "no", "closed", "accuracy", 1.0),
    ("left", "left", "closed", "accuracy", 1.0),
    ("The left lung", "left lung", "closed", "accuracy", 1.0),  # articles dropped
    ("left lung", "left", "closed", "accuracy", 0.0),  # contained is not equal
    ("x-ray", "x ray", "open", "accuracy", 1.0),
    ("X-Ray", "xray", "open", "accuracy", 0.0),
    ("2.5 cm", "25 cm", "open", "accuracy", 0.0),
    ("liver", ["kidney", "liver"], "open", "accuracy", 1.0),  # best accepted answer
    ("the liver and spleen", "liver", "open", "accuracy", 0.0),
    ("the liver and spleen", "liver", "open", "token_f1", 0.5),
    ("", "liver", "open", "token_f1", 0.0),
    ("CT (computed tomography)", "ct", "open", "accuracy", 0.0),
    ("MRI", "mri", "open", "accuracy", 1.0),
    ("isn't", "isnt", "open", "accuracy", 1.0),
]

LLAVA_MED = [
    ("yes", "yes", "closed", "accuracy", 1.0),
    ("Yes, there is no fracture", "no", "closed", "accuracy", 1.0),  # holds "no" and the reference
    ("Yes, there is no fracture", "yes", "closed", "accuracy", 1.0),  # ... and "yes": both right
    ("left", "left", "closed", "accuracy", 0.0),  # a closed choice answer without yes/no scores 0
    ("left, not right", "left", "closed", "accuracy", 1.0),  # "not" holds "no"
    ("nodule", "no", "closed", "accuracy", 1.0),
    ("abnormal", "no", "closed", "accuracy", 1.0),
    ("yes", "no", "closed", "accuracy", 0.0),
    ("No.", "no", "closed", "accuracy", 1.0),
    ("", "yes", "closed", "accuracy", 0.0),
    ("true", "yes", "closed", "accuracy", 0.0),  # no synonyms
    ("liver", "liver", "open", "recall", 1.0),
    ("the liver", "liver", "open", "exact_match", 1.0),
    ("liver and spleen", "liver", "open", "recall", 1.0),  # recall: an answer contained in a longer one is right
    ("liver and spleen", "liver", "open", "precision", 1 / 3),
    ("liver and spleen", "liver", "open", "f1", 0.5),
    ("liver and spleen", "liver", "open", "exact_match", 1 / 3),
    ("liver and spleen", "liver", "open", "bleu_1", 1 / 3),
    ("left left lung", "left lung", "open", "recall", 1.0),  # tp counts the prediction's repeats
    ("left left lung", "left lung", "open", "exact_match", 2 / 3),
    ("left", "left lung", "open", "recall", 0.5),
    ("left", "left lung", "open", "exact_match", 1.0),
    ("left", "left lung", "open", "open_hit", 0.0),
    ("none", "0", "open", "recall", 1.0),  # number words -> digits ("none" -> "0")
    ("two", "2", "open", "recall", 1.0),
    ("x-ray", "x ray", "open", "recall", 1.0),
    ("lungs", "lung", "open", "recall", 0.0),
    ("", "liver", "open", "recall", 0.0),
]

MEDEVALKIT = [
    ("yes", "yes", "closed", "vqa_rad", "accuracy", 1.0),
    ("Yes, there is no fracture", "no", "closed", "vqa_rad", "accuracy", 0.0),  # both yes and no appear
    ("Yes, there is no fracture", "yes", "closed", "vqa_rad", "accuracy", 0.0),
    ("No.", "no", "closed", "vqa_rad", "accuracy", 1.0),
    ("It is not.", "no", "closed", "vqa_rad", "accuracy", 1.0),  # "not" holds "no"
    ("yes", "No", "closed", "vqa_rad", "accuracy", 0.0),
    ("\\boxed{yes}", "yes", "closed", "vqa_rad", "accuracy", 1.0),
    ("<answer>no</answer>", "no", "closed", "vqa_rad", "accuracy", 1.0),
    ("The answer is: yes", "yes", "closed", "vqa_rad", "accuracy", 1.0),
    ("yes/no", "yes", "closed", "vqa_rad", "accuracy", 0.0),
    ("liver", "liver", "open", "vqa_rad", "accuracy", 1.0),
    ("Liver.", "liver", "open", "vqa_rad", "accuracy", 0.0),  # open: exact, the period stays
    ("the liver", "liver", "open", "vqa_rad", "accuracy", 0.0),
    ("the liver", "liver", "open", "vqa_rad", "precision", 0.5),
    ("the liver", "liver", "open", "vqa_rad", "recall", 1.0),
    ("the liver", "liver", "open", "vqa_rad", "rouge1", 2 / 3),
    ("left", "left", "closed", "vqa_rad", "accuracy", 1.0),  # a choice answer is open here, exact
    ("left lung", "left lung", "open", "vqa_rad", "bleu1", 1.0),
    ("left lung", "left lung", "open", "vqa_rad", "bleu2", 1.0),
    ("no", "no", "closed", "pathvqa", "accuracy", 1.0),
    ("Yes", "Yes", "closed", "slake", "accuracy", 1.0),  # SLAKE "Yes" is not "yes": exact match
    ("Yes, it is.", "Yes", "closed", "slake", "accuracy", 0.0),
    ("yes, it is", "yes", "closed", "slake", "accuracy", 1.0),  # lowercase reference: yes/no judgement
    ("Left lung.", "Left Lung", "closed", "slake", "accuracy", 1.0),
    ("Liver", "Liver", "open", "slake", "accuracy", 1.0),
    ("Answer: liver", "liver", "open", "slake", "accuracy", 0.0),  # the text after "answer:" keeps its space
    ("", "liver", "open", "vqa_rad", "accuracy", 0.0),
]

LMMS_EVAL = [
    (" Yes. ", "yes", 1.0), ("Yes, it is", "yes", 0.0), ("true", "yes", 1.0), ("nope", "No", 1.0),
    ("X-Ray", "xray", 1.0), ("x ray", "X-ray", 1.0), ("CT (computed tomography)", "CT", 1.0),
    ("Left Lung, Right", "left lung right", 1.0), ("the liver", "liver", 0.0), ("是的。", "是", 1.0),
    ("不正常", "no", 1.0), ("异常", "否", 1.0), ("正常", "yes", 1.0), ("liver", "Liver", 1.0), ("livers", "liver", 0.0),
    ("", "liver", 0.0), ("yes", "no", 0.0), ("胸腔（肺部）", "胸腔", 1.0), ("Yes, there is no fracture", "no", 0.0),
    ("2.5 cm", "2 5 cm", 1.0), ("correct", "yes", 0.0),
]


@pytest.mark.parametrize("pred,ref,atype,metric,expected", STRICT)
def test_strict(pred, ref, atype, metric, expected):
    assert run("strict", pred, ref, atype).metrics[metric] == pytest.approx(expected)


@pytest.mark.parametrize("pred,ref,atype,metric,expected", LLAVA_MED)
def test_llava_med(pred, ref, atype, metric, expected):
    s = run("llava_med", pred, ref, atype)
    assert s.closed == (atype == "closed") and s.metrics[metric] == pytest.approx(expected)


@pytest.mark.parametrize("pred,ref,atype,dataset,metric,expected", MEDEVALKIT)
def test_medevalkit(pred, ref, atype, dataset, metric, expected):
    assert run("medevalkit", pred, ref, atype, dataset).metrics[metric] == pytest.approx(expected)


@pytest.mark.parametrize("pred,ref,expected", LMMS_EVAL)
def test_lmms_eval(pred, ref, expected):
    assert run("lmms_eval", pred, ref, "open", "slake").metrics["accuracy"] == expected


def test_closed_means_differ():
    # VQA-RAD's closed choice question: closed by answer type, open under medevalkit (not a yes/no reference)
    assert run("strict", "left", "left").closed and run("lmms_eval", "left", "left").closed
    assert not run("medevalkit", "left", "left").closed
    # PathVQA-style yes/no reference typed open by a dataset: medevalkit still calls it closed
    assert run("medevalkit", "yes", "yes", "open").closed and not run("llava_med", "yes", "yes", "open").closed
    # SLAKE: medevalkit follows the answer type
    assert run("medevalkit", "yes", "yes", "open", "slake").closed is False


def test_same_predictions_different_numbers():
    """One set of predictions, four protocols, the numbers each protocol's rules imply."""
    rows = [("Yes, there is no fracture", "no", "closed"), ("left", "left", "closed"), ("The liver", "liver", "open"),
            ("No.", "no", "closed")]

    def cats(name):
        scores = [run(name, p, r, t) for p, r, t in rows]
        agg = aggregate(scores, ["vqa_rad"] * len(rows))
        return {c: {m: sum(v) / len(v) for m, v in ms.items()} for c, ms in agg.items()}, agg

    strict, _ = cats("strict")
    assert strict["closed"]["accuracy"] == pytest.approx(2 / 3) and strict["overall"]["accuracy"] == 0.75
    llava, _ = cats("llava_med")  # A right (holds no), B wrong (no yes/no), D right; open recall 1
    assert llava["closed"]["accuracy"] == pytest.approx(2 / 3) and llava["open"]["recall"] == 1.0
    assert "recall" not in llava["overall"]  # an open-only metric is never averaged over closed samples
    mek, agg = cats("medevalkit")  # closed = yes/no references only (A wrong, D right); B open right, C open wrong
    assert len(agg["closed"]["accuracy"]) == 2 and mek["closed"]["accuracy"] == 0.5
    assert mek["open"]["accuracy"] == 0.5 and mek["overall"]["accuracy"] == 0.5
    lmms, _ = cats("lmms_eval")  # A wrong, B right, C wrong (articles kept), D right
    assert lmms["closed"]["accuracy"] == pytest.approx(2 / 3) and lmms["open"]["accuracy"] == 0.0
    assert lmms["overall"]["accuracy"] == 0.5
    assert {strict["overall"]["accuracy"], mek["overall"]["accuracy"]} == {0.75, 0.5}


def test_parse_names_and_bad_input():
    assert parse_names(None) == list(PROTOCOLS) and parse_names("lmms_eval,strict") == ["lmms_eval", "strict"]
    with pytest.raises(ValueError, match="nope"):
        parse_names("strict,nope")
    with pytest.raises(ValueError, match="reference"):
        run("strict", "yes", [""])
    with pytest.raises(ValueError, match="answer_type"):
        run("strict", "yes", "yes", "maybe")


def _rec(rid, answer, atype, dataset="vqa_rad", lang=None):
    meta = {"dataset": dataset, "answer_type": atype, **({"q_lang": lang} if lang else {})}
    return {"id": rid, "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nIs it so?"},
                                                           {"from": "gpt", "value": answer}], "meta": meta}


def test_presets_append_their_suffix():
    recs = [_rec("a", "yes", "closed"), _rec("b", "liver", "open"), _rec("c", "Left", "closed", "slake"),
            _rec("d", "肝脏", "open", "slake", "zh")]
    mek = apply_preset(recs, "medevalkit")
    assert mek[0]["conversations"][0]["value"] == "<image>\nIs it so?\nPlease output 'yes' or 'no'(no extra output)."
    assert mek[1]["conversations"][0]["value"].endswith("\nPlease answer the question concisely.")
    assert mek[2]["conversations"][0]["value"].endswith("\nAnswer the question using a single word or phrase.")
    assert mek[3]["conversations"][0]["value"].endswith("\n请简要回答该问题。")
    lmms = apply_preset(recs, "lmms_eval")
    assert all(r["conversations"][0]["value"].endswith(("single word or phrase.", "请用一个词或短语回答问题。"))
               for r in lmms)
    assert apply_preset(recs, "strict") == recs and apply_preset(recs, "llava_med") == recs  # no suffix
    assert recs[0]["conversations"][0]["value"] == "<image>\nIs it so?"  # the input records are not changed

    class Enc:
        image_sizes = input_sizes = None

    assert prediction_row(mek[0], "yes", Enc(), "default")["question"] == "Is it so?"  # question without suffix
    g = PROTOCOLS["lmms_eval"].generation
    assert g.max_new_tokens == 32 and g.system is None
    assert PROTOCOLS["llava_med"].generation.system.startswith("A chat between a curious human")
