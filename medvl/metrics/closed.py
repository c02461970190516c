"""Closed-ended answer scores: accuracy and yes/no precision/recall/F1.

Why a separate module: closed questions (yes/no, or a choice among a few options) are scored by whether
the answer is *the* answer, so normalisation and yes/no extraction (normalize.py) matter more than
overlap. The positive class of the yes/no confusion matrix is "yes".
"""

from __future__ import annotations

from typing import Sequence

from medvl.metrics._checks import check_pairs
from medvl.metrics.normalize import normalize_answer, yes_no


def closed_accuracy(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Per-sample correctness of closed answers.

    A reference that is a yes/no answer (`yes_no(ref)` not None) is matched by meaning: the prediction is
    correct iff `yes_no(pred)` equals it ("Yes, there is" matches "yes"; an ambiguous or free-text
    prediction is wrong). Any other reference is matched by exact equality after `normalize_answer`.
    """
    check_pairs(preds, refs)
    out = []
    for p, r in zip(preds, refs):
        r_yn = yes_no(r)
        if r_yn is not None:
            out.append(float(yes_no(p) == r_yn))
        else:
            out.append(float(normalize_answer(p) == normalize_answer(r)))
    return out


def yes_no_correct(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Per-sample correctness on yes/no questions (every reference must be a yes/no answer)."""
    return [float(t == "TP" or t == "TN") for t in _outcomes(preds, refs)]


def _outcomes(preds: Sequence[str], refs: Sequence[str]) -> list[str]:
    """Confusion-matrix cell of each sample; invalid predictions are counted as the wrong answer."""
    check_pairs(preds, refs)
    cells = []
    for i, (p, r) in enumerate(zip(preds, refs)):
        r_yn = yes_no(r)
        if r_yn is None:
            raise ValueError(f"sample {i}: reference {r!r} is not a yes/no answer; "
                             "select yes/no questions (meta.question_type) before calling yes/no metrics")
        p_yn = yes_no(p)
        if p_yn is None:  # neither yes nor no: wrong, i.e. the opposite of the reference
            p_yn = "no" if r_yn == "yes" else "yes"
        cells.append({("yes", "yes"): "TP", ("yes", "no"): "FP", ("no", "yes"): "FN", ("no", "no"): "TN"}[(p_yn, r_yn)])
    return cells


def yes_no_prf(preds: Sequence[str], refs: Sequence[str]) -> dict:
    """Precision, recall and F1 of the class "yes", plus accuracy and the confusion matrix.

    A prediction that is neither yes nor no (`yes_no(pred) is None`: free text, ambiguous, empty) counts as
    wrong, entered as the opposite of the reference: reference "yes" -> a false negative (lowers recall),
    reference "no" -> a false positive (lowers precision). So tp+fp+fn+tn == n and
    accuracy == (tp+tn)/n == mean(yes_no_correct); `n_invalid` reports how many predictions were invalid.
    Precision/recall/F1 are None (not 0) when undefined (no positive predictions / references).
    """
    cells = _outcomes(preds, refs)
    n_invalid = sum(yes_no(p) is None for p in preds)
    tp, fp, fn, tn = (cells.count(c) for c in ("TP", "FP", "FN", "TN"))
    n = len(cells)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "positive_class": "yes", "n": n, "tp": tp, "fp": fp, "fn": fn, "tn": tn, "n_invalid": n_invalid,
        "accuracy": (tp + tn) / n if n else None, "precision": precision, "recall": recall, "f1": f1,
        "invalid_policy": "a prediction neither yes nor no counts as the opposite of the reference (FN if ref=yes, FP if ref=no)",
    }
