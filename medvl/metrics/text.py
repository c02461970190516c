"""Per-sample string-overlap scores for free-text answers.

Why per-sample lists: the caller averages per category, bootstraps confidence intervals and runs paired
tests (stats.py), all of which need the individual scores, not just a mean.

Every function takes (preds, refs) as equally long lists of strings and returns a list of floats in
[0, 1], one per sample. All comparisons use `normalize.normalize_answer` (lowercase, punctuation and
articles removed, see normalize.py). An empty prediction is allowed and scores as wrong; an empty
reference raises ValueError (see _checks.py).

Convention when the *normalised* reference has no words (e.g. the reference was just "The."): the sample
scores 1.0 if the normalised prediction is empty too, else 0.0 (the SQuAD convention for token F1, used
by every function here so they agree).
"""

from __future__ import annotations

import difflib
from collections import Counter
from typing import Callable, Sequence

import numpy as np

from medvl.metrics._checks import check_pairs
from medvl.metrics.normalize import normalize_answer


def _pairs(preds: Sequence[str], refs: Sequence[str]) -> list[tuple[str, str]]:
    check_pairs(preds, refs)
    return [(normalize_answer(p), normalize_answer(r)) for p, r in zip(preds, refs)]


def average(scores: Sequence[float]) -> float:
    """Mean of per-sample scores. Raises on an empty list: a mean over zero samples is undefined, not 0."""
    if len(scores) == 0:
        raise ValueError("cannot average zero per-sample scores")
    arr = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("per-sample scores contain NaN or inf")
    return float(arr.mean())


def exact_match(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """1.0 when the normalised prediction equals the normalised reference."""
    return [float(p == r) for p, r in _pairs(preds, refs)]


def soft_match(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """difflib.SequenceMatcher ratio on the characters of the normalised strings (2*matches / total length).

    autojunk=False: difflib's default junk heuristic only kicks in for strings of 200+ characters and would
    make the score depend on length in a way unrelated to similarity.
    """
    return [difflib.SequenceMatcher(None, p, r, autojunk=False).ratio() for p, r in _pairs(preds, refs)]


def substring_match(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """1.0 when the normalised reference occurs in the normalised prediction *on word boundaries*.

    Word boundaries, not raw characters: a raw test would count reference "no" as found in "abnormal"
    and "left" in "cleft".
    """
    out = []
    for p, r in _pairs(preds, refs):
        out.append(float(p == "") if r == "" else float(f" {r} " in f" {p} "))
    return out


def word_overlap(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """|set(pred words) & set(ref words)| / |set(ref words)|: the share of distinct reference words found."""
    out = []
    for p, r in _pairs(preds, refs):
        pw, rw = set(p.split()), set(r.split())
        out.append(float(not pw) if not rw else len(pw & rw) / len(rw))
    return out


def word_contain(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """1.0 when every reference word occurs somewhere in the prediction (order ignored)."""
    out = []
    for p, r in _pairs(preds, refs):
        pw, rw = set(p.split()), set(r.split())
        out.append(float(not pw) if not rw else float(rw <= pw))
    return out


def _bag_prf(pred_items: list[str], ref_items: list[str]) -> tuple[float, float, float]:
    """Precision, recall, F1 of multiset overlap (SQuAD token F1 when items are words)."""
    if not pred_items or not ref_items:
        same = float(pred_items == ref_items)
        return same, same, same
    common = sum((Counter(pred_items) & Counter(ref_items)).values())
    if common == 0:
        return 0.0, 0.0, 0.0
    prec, rec = common / len(pred_items), common / len(ref_items)
    return prec, rec, 2 * prec * rec / (prec + rec)


def _word_items(s: str) -> list[str]:
    return s.split()


def _char_items(s: str) -> list[str]:
    """Characters of the normalised string, spaces excluded (they are separators, not content)."""
    return [c for c in s if not c.isspace()]


def _prf_lists(preds, refs, items: Callable[[str], list[str]]) -> list[tuple[float, float, float]]:
    return [_bag_prf(items(p), items(r)) for p, r in _pairs(preds, refs)]


def word_precision(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Share of prediction words (with multiplicity) that also occur in the reference."""
    return [t[0] for t in _prf_lists(preds, refs, _word_items)]


def word_recall(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Share of reference words (with multiplicity) that also occur in the prediction."""
    return [t[1] for t in _prf_lists(preds, refs, _word_items)]


def token_f1(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """SQuAD-style token F1 over normalised words (bag of words, multiplicity counted)."""
    return [t[2] for t in _prf_lists(preds, refs, _word_items)]


def char_precision(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Bag-of-characters precision (spaces excluded)."""
    return [t[0] for t in _prf_lists(preds, refs, _char_items)]


def char_recall(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Bag-of-characters recall (spaces excluded)."""
    return [t[1] for t in _prf_lists(preds, refs, _char_items)]


def char_f1(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Bag-of-characters F1 (spaces excluded)."""
    return [t[2] for t in _prf_lists(preds, refs, _char_items)]
