"""ROUGE, BLEU, METEOR, CIDEr against their reference implementations called directly on the same inputs.

JVM starts dominate the time (METEOR ~6-8 s each), so one module fixture scores everything once, and the
reference METEOR's JVM is started before ours so the two load in parallel.
"""

import os
import stat

import pytest

from medvl.metrics import nlg
from medvl.metrics.errors import MetricUnavailable

PREDS = [
    "The liver is enlarged, with a hypodense lesion in the right lobe.",
    "",                                                   # empty prediction
    "yes",
    "A small nodule in the left upper lobe of the lung.",
    "There is a fracture of the left femur",
    "Normal chest x-ray without acute findings",
]
REFS = [
    "the liver is enlarged with a hypodense lesion in the right lobe",
    "a small nodule in the left lung",
    "yes",
    "a small nodule in the right upper lobe",
    "fracture of the left femoral neck",
    "no acute cardiopulmonary abnormality",
]
LONG = "the chest radiograph shows a large right sided pleural effusion with adjacent atelectasis"


@pytest.fixture(scope="module")
def coco():
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ref_meteor = Meteor()  # JVM starts loading now, in parallel with ours below
    try:
        ours = nlg.coco_scores(PREDS + [LONG], REFS + [LONG])
        n = len(PREDS) + 1
        tok = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(PREDS + [LONG] + REFS + [LONG])})
        res = {i: tok[i] for i in range(n)}
        gts = {i: tok[n + i] for i in range(n)}
        direct_meteor = ref_meteor.compute_score(gts, res)
    finally:
        ref_meteor.meteor_p.stdin.close()
        ref_meteor.meteor_p.kill()
        ref_meteor.meteor_p.wait()
    return ours, gts, res, direct_meteor


def test_rouge_equals_rouge_score():
    from rouge_score import rouge_scorer

    sc = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    assert nlg.rouge_l(PREDS, REFS) == [sc.score(r, p)["rougeL"].fmeasure for p, r in zip(PREDS, REFS)]
    assert nlg.rouge_1(PREDS, REFS) == [sc.score(r, p)["rouge1"].fmeasure for p, r in zip(PREDS, REFS)]
    assert nlg.rouge_l(["liver"], ["liver"]) == [1.0] and nlg.rouge_l([""], ["liver"]) == [0.0]


def test_bleu_cider_meteor_equal_pycocoevalcap(coco):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    ours, gts, res, (m_corpus, m_per) = coco
    b_corpus, b_per = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        assert ours[f"bleu{k + 1}"]["score"] == pytest.approx(b_corpus[k], abs=1e-12)
        assert ours[f"bleu{k + 1}"]["per_sample"] == pytest.approx(b_per[k], abs=1e-12)
    c_corpus, c_per = Cider().compute_score(gts, res)
    assert ours["cider"]["score"] == pytest.approx(c_corpus)
    assert ours["cider"]["per_sample"] == pytest.approx(list(c_per))
    assert ours["meteor"]["score"] == pytest.approx(m_corpus)
    assert ours["meteor"]["per_sample"] == pytest.approx(m_per)


def test_sanity_values(coco):
    ours = coco[0]
    last = len(PREDS)  # the identical long pair
    assert ours["bleu4"]["per_sample"][last] == pytest.approx(1.0, abs=1e-6)
    assert 0.9 < ours["meteor"]["per_sample"][last] <= 1.0
    # a correct one-word answer has a meaningless BLEU-4 (why BLEU is reported on open-ended answers only)
    assert ours["bleu4"]["per_sample"][2] < 1e-3


def test_empty_prediction_scores_zero_without_placeholder(coco):
    ours, gts, res, _ = coco
    assert res[1] == [""]  # passed through empty, not replaced
    for m in ("bleu1", "bleu4", "meteor", "cider"):
        assert ours[m]["per_sample"][1] == pytest.approx(0.0, abs=1e-9)
        assert len(ours[m]["per_sample"]) == len(PREDS) + 1


def test_ptb_alignment_survives_line_breaks():
    out = nlg.ptb_tokenize(["first\rline", "a|b", "second\u2028line\nthird", "", "Last."])
    assert out == ["first line", "a | b", "second line third", "", "last"]  # "|" untouched (#16.5)


def test_missing_java_raises(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java anywhere on PATH
    with pytest.raises(MetricUnavailable, match="no `java`"):
        nlg.coco_scores(PREDS, REFS, metrics=["bleu4"])
    with pytest.raises(MetricUnavailable, match="no `java`"):
        nlg._run_meteor({0: ["a b"]}, {0: ["a b"]})


def test_failing_java_raises_not_zero(monkeypatch, tmp_path):
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'Error: could not create the Java Virtual Machine.' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(MetricUnavailable, match="PTBTokenizer"):
        nlg.coco_scores(PREDS, REFS, metrics=["bleu4"])
    with pytest.raises(MetricUnavailable, match="METEOR jar failed"):
        nlg._run_meteor({0: ["a b"], 1: ["c"]}, {0: ["a b"], 1: ["c"]})


def test_cider_needs_a_corpus_and_refs_must_be_nonempty():
    with pytest.raises(MetricUnavailable, match="at least 2 samples"):
        nlg.coco_scores(["liver"], ["liver"], metrics=["cider"])
    with pytest.raises(ValueError, match="sample 0: reference answer is empty"):
        nlg.coco_scores(["liver"], [""], metrics=["bleu4"])
