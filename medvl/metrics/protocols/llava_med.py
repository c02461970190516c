"""llava_med: VQA-RAD / SLAKE / PathVQA as LLaVA-Med scores them.

Source: microsoft/LLaVA-Med, llava/eval/run_eval.py with llava/eval/eval_metrics/{evaluate_metrics,glossary,utils}.py
at commit b9a98a7 ("fix closed accuracy calculation (#35)", the last commit that has them; the v1.5 release removed
them). The paper (Li et al., "LLaVA-Med", arXiv 2306.00890, Table 4) reports closed accuracy and open recall.

Closed = the dataset's answer type (gt_item['answer_type'] == 'CLOSED'; here type_mapping.json's answer_type, which
keeps VQA-RAD's and SLAKE's released types). Both answers are lowercased and passed through `normalize_word`
(below); then
  * closed: right when the prediction contains "yes" or "no" *as characters anywhere* and contains the reference as
    characters anywhere. So "Yes, there is no fracture" is right for reference "no" and for "yes" alike; "nodule"
    holds "no"; and a closed answer that is not yes/no ("left") is right only when the prediction also happens to
    hold "yes"/"no" ("left" alone scores 0, "left, not right" scores 1).
  * open: `recall` (the paper's open metric) from calculate_f1score over whitespace words: tp sums the *prediction's*
    count of each word both share, fp the prediction's count of words only it has, fn the reference's count of words
    only it has; precision = tp/(tp+fp), recall = tp/(tp+fn); 0 when either side has no words or tp = 0. Also
    `exact_match` as calculate_exactmatch defines it (distinct reference words found / prediction words, so a longer
    answer is penalised), `open_hit` (the reference contained in the prediction, run_eval_batch.py's open rule) and
    nltk sentence BLEU over whitespace words: `bleu` (nltk's default 4-gram weights) and `bleu_1`..`bleu_3` (weights
    (1,0,0,0), (0,1,0,0), (0,0,1,0): one n-gram order each, as run_eval.py calls it).
`normalize_word` (glossary.py), in order: each of ; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? ! is deleted when the
original text has it next to a space or the text holds a digit-comma-digit, else replaced by a space; periods not
followed by a digit are deleted (at most 32: the source passes re.UNICODE as re.sub's count); the words are lowered,
the number words none/zero..ten become digits ("none" -> "0"), a/an/the dropped, apostrophe-less contractions get
their apostrophe ("isnt" -> "isn't"; the subset that occurs in short answers), commas removed.
Not reproduced: run_eval.py's "open accuracy" picks the closest answer of a candidate vocabulary (candidate.json,
not released); one accepted answer (the first reference) is used, as the source has one.
Generation (llava/eval/model_vqa_med.py): the question as it is, conv template "simple" (the Vicuna-style system
turn below), max_new_tokens 1024; the source samples at temperature 0.7, this project decodes greedily.
"""
from __future__ import annotations

import re
import warnings
from collections import Counter

from nltk.translate.bleu_score import sentence_bleu

from medvl.metrics.protocols.base import Generation, MetricDef, Protocol, SampleScore

_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"\.(?!\d)")
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_CONTRACTIONS = {w.replace("'", ""): w for w in (
    "ain't", "aren't", "can't", "couldn't", "didn't", "doesn't", "don't", "hadn't", "hasn't", "haven't", "isn't",
    "mightn't", "mustn't", "needn't", "shan't", "shouldn't", "wasn't", "weren't", "won't", "wouldn't", "that's",
    "there's", "what's", "where's", "who's")}
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the human's questions.")


def normalize_word(text: str) -> str:
    """LLaVA-Med's answer normalisation (rules in the module docstring)."""
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or _DIGIT_COMMA.search(text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _PERIOD.sub("", out, count=32)
    words = [_NUMBERS.get(w, w) for w in out.lower().split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words).replace(",", "")


def f1_precision_recall(pred: str, ref: str) -> tuple[float, float, float]:
    """calculate_f1score's (f1, precision, recall) over normalised whitespace words (counting rule in the docstring)."""
    pw, rw = Counter(normalize_word(pred).split()), Counter(normalize_word(ref).split())
    if not pw or not rw:
        return 0.0, 0.0, 0.0
    tp = sum(c for w, c in pw.items() if w in rw)
    fp = sum(c for w, c in pw.items() if w not in rw)
    fn = sum(c for w, c in rw.items() if w not in pw)
    if tp == 0:
        return 0.0, 0.0, 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 2 * precision * recall / (precision + recall), precision, recall


def exact_match(pred: str, ref: str) -> float:
    """calculate_exactmatch: distinct reference words found in the prediction / number of prediction words."""
    pw, rw = Counter(normalize_word(pred).split()), set(normalize_word(ref).split())
    total = sum(pw.values())
    return sum(1 for w in rw if w in pw) / total if total else 0.0


def closed_hit(pred: str, ref: str) -> float:
    p, r = normalize_word(pred.lower()), normalize_word(ref.lower())
    return float(("yes" in p or "no" in p) and r in p)


def _bleu(ref_words: list[str], pred_words: list[str], weights) -> float:
    with warnings.catch_warnings():  # nltk warns on every answer shorter than 4 words
        warnings.simplefilter("ignore")
        return float(sentence_bleu([ref_words], pred_words, weights=weights))


def score(prediction: str, references: list[str], *, answer_type: str, dataset: str, question: str) -> SampleScore:
    ref = references[0]
    if answer_type == "closed":
        hit = closed_hit(prediction, ref)
        return SampleScore(True, {"accuracy": hit, "accuracy_or_recall": hit})
    p, r = normalize_word(prediction.lower()), normalize_word(ref.lower())
    f1, precision, recall = f1_precision_recall(p, r)
    pw, rw = p.split(), r.split()
    return SampleScore(False, {
        "recall": recall, "precision": precision, "f1": f1, "exact_match": exact_match(p, r),
        "open_hit": float(r in p), "bleu": _bleu(rw, pw, (0.25, 0.25, 0.25, 0.25)),
        "bleu_1": _bleu(rw, pw, (1, 0, 0, 0)), "bleu_2": _bleu(rw, pw, (0, 1, 0, 0)),
        "bleu_3": _bleu(rw, pw, (0, 0, 1, 0)), "accuracy_or_recall": recall})


PROTOCOL = Protocol(
    name="llava_med",
    title="llava_med (LLaVA-Med run_eval.py: closed contains yes/no and the reference; open recall)",
    closed_means="the dataset's answer type (type_mapping.json answer_type)",
    rules="answers lowercased and normalize_word'ed; closed right when the prediction contains 'yes' or 'no' and the "
          "reference as characters anywhere; open scored by recall of the reference words (calculate_f1score)",
    source="microsoft/LLaVA-Med llava/eval/run_eval.py + llava/eval/eval_metrics/ (commit b9a98a7); arXiv 2306.00890",
    metrics=(MetricDef("accuracy", "closed accuracy (contains yes/no and the reference)", ci=True),
             MetricDef("recall", "open recall (reference words found)", ci=True),
             MetricDef("accuracy_or_recall", "closed accuracy or open recall per sample (not a LLaVA-Med number)"),
             MetricDef("precision", "open precision"), MetricDef("f1", "open F1"),
             MetricDef("exact_match", "open 'exact match' (distinct reference words / prediction words)"),
             MetricDef("open_hit", "open hit (reference contained in the prediction)"),
             MetricDef("bleu", "open BLEU (nltk, 4-gram)"), MetricDef("bleu_1", "open BLEU-1 (nltk)"),
             MetricDef("bleu_2", "open 2-gram precision (nltk weights 0,1,0,0)"),
             MetricDef("bleu_3", "open 3-gram precision (nltk weights 0,0,1,0)")),
    generation=Generation(system=SYSTEM, max_new_tokens=1024, suffixes={}, choose=lambda view: None,
                          decoding="source: sampling at temperature 0.7, max_new_tokens 1024; here greedy",
                          source="microsoft/LLaVA-Med llava/eval/model_vqa_med.py, llava/conversation.py "
                                 "(simple_conv), commit b9a98a7"),
    scorer=score,
    datasets_note="written for VQA-RAD, SLAKE and PathVQA; applied unchanged to any dataset",
)
