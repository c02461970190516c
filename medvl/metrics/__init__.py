"""Metric library: pure functions over lists of answers (and boxes), each checked against its reference
implementation in tests/test_metrics_*.py.

Modules: normalize (answer normalisation, yes/no), text (string overlap), closed (closed-ended accuracy,
yes/no P/R/F1), nlg (ROUGE, pycocoevalcap BLEU/METEOR/CIDEr, nltk variants), bertscore, grounding (boxes),
stats (bootstrap CI, paired tests), wordnet_setup (WordNet for nltk METEOR), errors (MetricUnavailable).

`compute_all` is the one entry for text answers. A reference may be a list of accepted answers (references.py):
per-sample metrics keep the best match over them, BLEU/METEOR/CIDEr score them as pycocoevalcap's multiple
references. A metric that cannot be computed raises
`MetricUnavailable` (default) or, with `allow_missing=True`, is listed under result["unavailable"] with
its reason - never reported as 0.0.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable, Sequence

from medvl.metrics import closed, nlg, text
from medvl.metrics.errors import MetricUnavailable
from medvl.metrics.references import best, best_of, flatten, ref_lists

# Per-sample metrics: (preds, refs) -> list[float]; the reported score is their mean.
TEXT_METRICS: dict[str, Callable[[Sequence[str], Sequence[str]], list[float]]] = {
    "exact_match": text.exact_match,
    "soft_match": text.soft_match,
    "substring_match": text.substring_match,
    "word_overlap": text.word_overlap,
    "word_contain": text.word_contain,
    "word_precision": text.word_precision,
    "word_recall": text.word_recall,
    "word_f1": text.word_f1,
    "char_precision": text.char_precision,
    "char_recall": text.char_recall,
    "char_f1": text.char_f1,
    "closed_accuracy": closed.closed_accuracy,
    "rouge_1": nlg.rouge_1,
    "rouge_l": nlg.rouge_l,
    "nltk_bleu4_method1": functools.partial(nlg.nltk_sentence_bleu, smoothing="method1"),
    "nltk_meteor": nlg.nltk_meteor,
}
# Corpus metrics from pycocoevalcap (one PTB tokenization shared by all): corpus score + per-sample list.
COCO_METRICS = nlg.COCO_METRICS
BERTSCORE = "bertscore_f1"
OPTIONAL_METRICS = ("nltk_bleu4_method1", "nltk_meteor")  # comparison only; computed when named in `include`
DEFAULT_METRICS = tuple(m for m in TEXT_METRICS if m not in OPTIONAL_METRICS) + COCO_METRICS
ALL_METRICS = tuple(TEXT_METRICS) + COCO_METRICS + (BERTSCORE,)

_NOTES = {m: "corpus BLEU from pycocoevalcap on PTB tokens; meaningful for open-ended (multi-word) answers only"
          for m in COCO_METRICS if m.startswith("bleu")}
_NOTES["nltk_bleu4_method1"] = "mean nltk sentence BLEU-4, smoothing method1 (a correct one-word answer scores 0.1778)"
_NOTES["cider"] = "pycocoevalcap CIDEr-D (x10); idf from the references scored together in this call"
_NOTES["nltk_meteor"] = "mean of nltk per-sample METEOR (WordNet 3.0); not the jar's corpus METEOR"


def compute_all(preds: Sequence[str], refs: Sequence, *, bertscore_model: str | None = None,
                bertscore_num_layers: int | None = None, include: Iterable[str] | None = None,
                allow_missing: bool = False) -> dict:
    """Compute text metrics for one set of (prediction, reference) pairs; a reference is a string or a list of
    accepted answers (best match per sample, multi-reference pycocoevalcap, see references.py).

    include: metric names (see ALL_METRICS); None means DEFAULT_METRICS, plus "bertscore_f1" when
      `bertscore_model` is given. Asking for "bertscore_f1" without a model is an error.
    Returns {name: {"score": float, "per_sample": list[float] | None, ["note": str], ["info": dict]}};
    with allow_missing=True also {"unavailable": {name: reason}} (possibly empty) for metrics whose backend
    failed. With allow_missing=False (default) the first MetricUnavailable propagates.
    Answer types are not known here: select open-ended samples before reading BLEU.
    """
    names = list(dict.fromkeys(include if include is not None else
                               DEFAULT_METRICS + ((BERTSCORE,) if bertscore_model else ())))
    unknown = [n for n in names if n not in ALL_METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {list(ALL_METRICS)}")
    if BERTSCORE in names and not bertscore_model:
        raise ValueError("bertscore_f1 requested without bertscore_model (a hub name or a local directory, e.g. "
                         "medvl.metrics.bertscore.default_local_bertscore_model())")
    lists = ref_lists(preds, refs)
    if not preds:
        raise ValueError("no samples to score")

    results: dict = {}
    unavailable: dict = {}

    def attempt(group: list[str], fn: Callable[[], dict]) -> None:
        try:
            results.update(fn())
        except MetricUnavailable as e:
            if not allow_missing:
                raise
            for m in group:
                unavailable[m] = str(e)

    for name in names:
        if name in TEXT_METRICS:
            attempt([name], lambda name=name: {name: _per_sample_result(best_of(TEXT_METRICS[name], preds, refs))})

    coco = [m for m in names if m in COCO_METRICS]
    if coco:
        # One PTB tokenization (one JVM) for all pycocoevalcap metrics; then each scorer on its own, so a
        # failing METEOR jar does not take BLEU and CIDEr down with it when skipping is allowed.
        tokenized: list = []

        def _tokenize() -> dict:
            tokenized.extend(nlg.coco_tokenize_pairs(preds, refs))
            return {}

        attempt(coco, _tokenize)
        if tokenized:
            gts, res = tokenized
            groups = [[m for m in coco if m.startswith("bleu")], [m for m in coco if m == "meteor"],
                      [m for m in coco if m == "cider"]]
            for group in (g for g in groups if g):
                attempt(group, lambda group=group: nlg.coco_from_tokens(gts, res, group))

    if BERTSCORE in names:
        from medvl.metrics.bertscore import bertscore_f1

        def _bs() -> dict:
            fp, fr, owner = flatten(preds, lists)
            f1, info = bertscore_f1(fp, fr, model=bertscore_model, num_layers=bertscore_num_layers)
            return {BERTSCORE: {**_per_sample_result(best(f1, owner, len(preds))), "info": info}}

        attempt([BERTSCORE], _bs)

    ordered = {n: results[n] for n in names if n in results}
    for n, note in _NOTES.items():
        if n in ordered:
            ordered[n]["note"] = note
    if allow_missing:
        ordered["unavailable"] = unavailable
    return ordered


def _per_sample_result(per_sample: list[float]) -> dict:
    return {"score": text.average(per_sample), "per_sample": list(per_sample)}


__all__ = ["TEXT_METRICS", "COCO_METRICS", "DEFAULT_METRICS", "OPTIONAL_METRICS", "ALL_METRICS", "BERTSCORE",
           "compute_all", "MetricUnavailable"]
