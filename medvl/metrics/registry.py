"""The metric registry: every reported metric once, with its label, direction, the categories it applies to and its
reference implementation. Evaluation, tables, plots and the report read it; none keeps its own list.

    from medvl.metrics.registry import METRICS, label
    METRICS["token_f1"].fn(["the liver"], ["liver"])   # -> [1.0]

Fields of a `Metric`:
  name, label       the key in results files and the name shown in tables and plots
  higher_is_better  direction (the best value of a table row is the max, or the min)
  applies_to        which categories get a number (anything else records "not applicable" with `APPLIES_TO`'s reason):
                      "closed"    categories whose samples are all closed questions
                      "yes_no"    categories whose samples are all yes/no questions with yes/no references
                      "open"      categories whose samples are all open-ended (BLEU: a correct one-word answer has a
                                  meaningless BLEU, so categories holding closed answers get none)
                      "text"      every text category (VQA, captions, region tasks)
                      "grounding" the grounding category (box answers)
  kind              how it is computed: "per_sample" (fn(preds, refs) -> per-sample list, score = mean), "yes_no"
                    (a field of closed.yes_no_prf), "coco" (pycocoevalcap corpus score, nlg.coco_from_tokens),
                    "model" (BERTScore, needs a model), "box" (medvl.metrics.grounding)
  fn                the reference implementation (per-sample metrics: the function evaluation calls)
  ci                a bootstrap CI is reported (the headline metrics)
  table, plot       shown as a row of the comparison tables / as a bar of the plots
Names renamed since results were first written are in `OLD_NAMES` (old name -> name); readers of older results
files map them with `canonical`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from medvl.metrics import bertscore, closed, grounding, nlg, text

APPLIES_TO = {
    "closed": "only for categories of closed questions",
    "yes_no": "only for categories of yes/no questions",
    "open": "closed answers: BLEU of a correct one-word answer is meaningless; BLEU is reported on open-ended answers "
            "only",
    "text": "only for text answers",
    "grounding": "only for grounding (box) answers",
}
OLD_NAMES = {"word_f1": "token_f1"}


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    higher_is_better: bool
    applies_to: str
    kind: str
    fn: Callable
    definition: str
    ci: bool = False
    table: bool = True
    plot: bool = False


def _m(name, label, applies_to, kind, fn, definition, higher=True, **flags) -> Metric:
    return Metric(name, label, higher, applies_to, kind, fn, definition, **flags)


_BLEU = ("pycocoevalcap corpus BLEU-{n} on PTB tokens; open-ended answers only")
_ORDER = [
    _m("closed_accuracy", "closed accuracy", "closed", "per_sample", closed.closed_accuracy,
       "closed questions: yes/no answers matched by meaning (medvl.metrics.normalize.yes_no), others by exact match "
       "after normalisation", ci=True, plot=True),
    _m("yes_no_precision", "yes/no precision", "yes_no", "yes_no", closed.yes_no_prf,
       "precision of the class 'yes'; an answer neither yes nor no counts as the wrong answer"),
    _m("yes_no_recall", "yes/no recall", "yes_no", "yes_no", closed.yes_no_prf, "recall of the class 'yes'"),
    _m("yes_no_f1", "yes/no F1", "yes_no", "yes_no", closed.yes_no_prf, "F1 of the class 'yes'"),
    _m("exact_match", "exact match", "text", "per_sample", text.exact_match,
       "normalised prediction == normalised reference (lowercase, punctuation and articles removed)", ci=True,
       plot=True),
    _m("soft_match", "soft match", "text", "per_sample", text.soft_match,
       "difflib SequenceMatcher ratio of the normalised strings"),
    _m("substring_match", "substring", "text", "per_sample", text.substring_match,
       "normalised reference found in the prediction on word boundaries"),
    _m("word_overlap", "word overlap", "text", "per_sample", text.word_overlap,
       "share of distinct reference words found in the prediction"),
    _m("word_contain", "word contain", "text", "per_sample", text.word_contain,
       "1 when every reference word occurs in the prediction"),
    _m("word_precision", "word precision", "text", "per_sample", text.word_precision, "bag-of-words precision"),
    _m("word_recall", "word recall", "text", "per_sample", text.word_recall, "bag-of-words recall"),
    _m("token_f1", "token F1", "text", "per_sample", text.token_f1,
       "SQuAD-style bag-of-words F1 over normalised words", ci=True, plot=True),
    _m("char_precision", "char precision", "text", "per_sample", text.char_precision,
       "bag-of-characters precision (spaces excluded)"),
    _m("char_recall", "char recall", "text", "per_sample", text.char_recall, "bag-of-characters recall"),
    _m("char_f1", "char F1", "text", "per_sample", text.char_f1, "bag-of-characters F1"),
    _m("rouge_1", "ROUGE-1", "text", "per_sample", nlg.rouge_1,
       "rouge-score ROUGE-1 F, Porter stemmer, mean over samples"),
    _m("rouge_l", "ROUGE-L", "text", "per_sample", nlg.rouge_l,
       "rouge-score ROUGE-L F, Porter stemmer, mean over samples", ci=True, plot=True),
    _m("bleu1", "BLEU-1 (open)", "open", "coco", nlg.coco_scores, _BLEU.format(n=1)),
    _m("bleu2", "BLEU-2 (open)", "open", "coco", nlg.coco_scores, _BLEU.format(n=2), table=False),
    _m("bleu3", "BLEU-3 (open)", "open", "coco", nlg.coco_scores, _BLEU.format(n=3), table=False),
    _m("bleu4", "BLEU-4 (open)", "open", "coco", nlg.coco_scores,
       _BLEU.format(n=4) + " (a correct one-word answer has a meaningless BLEU-4)", plot=True),
    _m("meteor", "METEOR", "text", "coco", nlg.coco_scores,
       "METEOR 1.5 jar via pycocoevalcap, corpus score of the category", plot=True),
    _m("cider", "CIDEr", "text", "coco", nlg.coco_scores,
       "pycocoevalcap CIDEr-D (x10 scale); idf from the category's own references (needs >= 2 samples)"),
    _m("bertscore_f1", "BERTScore F1", "text", "model", bertscore.bertscore_f1,
       "bert-score F1, mean over samples (model: see notes)", ci=True, plot=True),
    _m("box_rate", "box rate", "grounding", "box", grounding.grounding_scores,
       "share of grounding samples with a parsable predicted box", plot=True),
    _m("mean_iou", "mean IoU (missing box = 0)", "grounding", "box", grounding.grounding_scores,
       "IoU of the first predicted box with the best-matching reference box (highest IoU over the sample's reference "
       "boxes), a missing box counted as 0", ci=True, plot=True),
    _m("mean_iou_boxed_only", "mean IoU (boxed samples only)", "grounding", "box", grounding.grounding_scores,
       "mean IoU over samples that produced a box; biased upwards (silence is free), read with box rate", plot=True),
    _m("iou_gt_0_5_rate", "IoU > 0.5 rate", "grounding", "box", grounding.grounding_scores,
       "share of samples with IoU > 0.5 (missing box = miss)", plot=True),
    _m("centre_inclusion_rate", "centre inclusion", "grounding", "box", grounding.grounding_scores,
       "share whose predicted box centre lies in the reference box", plot=True),
    _m("position_match_rate", "position match", "grounding", "box", grounding.position_match,
       "share of samples whose reference label names a side or level (left/right, upper/lower, centre) where the "
       "predicted box lies there by image thirds (medvl.metrics.grounding.position_match; missing box = miss); "
       "left/right are the patient's side except for the viewer-side datasets named in the notes", plot=True),
    _m("mean_centre_point_error_px_boxed_only", "centre error px (boxed only)", "grounding", "box",
       grounding.grounding_scores, "mean distance in pixels of the original image between box centres, boxed "
       "samples only", higher=False),
]
METRICS: dict[str, Metric] = {m.name: m for m in _ORDER}

# the metric a category's paired test compares on: the first of these the category has per sample
COMPARED_ON = ("closed_accuracy", "mean_iou", "token_f1")


def names(*, kind: str | None = None, applies_to: str | None = None, **flags: bool) -> tuple[str, ...]:
    """Registry names in table order, filtered by kind, applies_to and flags (ci=True, table=True, plot=True)."""
    return tuple(m.name for m in _ORDER if (kind is None or m.kind == kind)
                 and (applies_to is None or m.applies_to == applies_to)
                 and all(getattr(m, k) == v for k, v in flags.items()))


def canonical(name: str) -> str:
    """The current name of a metric (old results files say `word_f1`)."""
    return OLD_NAMES.get(name, name)


def label(name: str) -> str:
    """Display label of a metric; an unknown name is shown as it is."""
    m = METRICS.get(canonical(name))
    return m.label if m else name


def applies(name: str, answer_types: set[str], yes_no_questions: bool) -> bool:
    """Whether a text metric gets a number in a category whose samples have these answer types (`yes_no_questions`:
    every sample is a yes/no question with a yes/no reference)."""
    scope = METRICS[name].applies_to
    return {"closed": answer_types == {"closed"}, "open": answer_types == {"open"}, "yes_no": yes_no_questions,
            "text": True, "grounding": False}[scope]


TEXT_PER_SAMPLE = names(kind="per_sample")
BLEU = tuple(n for n in names(kind="coco") if n.startswith("bleu"))
COCO = names(kind="coco")
YES_NO = names(kind="yes_no")
GROUNDING = names(kind="box")
TEXT = tuple(m.name for m in _ORDER if m.applies_to != "grounding")
HEADLINE = names(ci=True)
