"""Several accepted reference answers per sample (VQA-Med 2019 `a#b` alternatives and `(optional)` words, kept by
the converter in meta.answers).

Why: scoring only the first accepted form marks a model wrong for giving another accepted form. Rules:
  * per-sample metrics (exact match, closed accuracy, token F1, recall, ROUGE, BERTScore, ...): the best match,
    i.e. the maximum of the metric over the sample's references (`best_of`);
  * BLEU / METEOR / CIDEr: pycocoevalcap's own multi-reference scoring, every reference of the sample in its
    list (`nlg.coco_tokenize_pairs` takes the lists);
  * the first reference is the one that decides categories and the yes/no confusion matrix (accepted forms of
    one answer agree on yes/no).
A reference is a string or a non-empty list of strings; an empty string anywhere is refused.
"""
from __future__ import annotations

from typing import Callable, Sequence

from medvl.metrics._checks import check_pairs

Refs = Sequence["str | Sequence[str]"]


def ref_lists(preds: Sequence[str], refs: Refs) -> list[list[str]]:
    """Each reference as a list of strings, validated (lengths, types, no empty answer) naming the sample."""
    check_pairs(preds, refs, multi=True)
    return [[r] if isinstance(r, str) else list(r) for r in refs]


def flatten(preds: Sequence[str], lists: Sequence[Sequence[str]]) -> tuple[list[str], list[str], list[int]]:
    """(predictions repeated once per reference, the references, the sample each pair belongs to)."""
    fp, fr, owner = [], [], []
    for i, (p, forms) in enumerate(zip(preds, lists)):
        fp += [p] * len(forms)
        fr += list(forms)
        owner += [i] * len(forms)
    return fp, fr, owner


def best(scores: Sequence[float], owner: Sequence[int], n: int) -> list[float]:
    """Per-sample maximum of flattened per-pair scores."""
    out = [float("-inf")] * n
    for s, i in zip(scores, owner):
        out[i] = max(out[i], float(s))
    return out


def best_of(metric: Callable[[Sequence[str], Sequence[str]], list[float]], preds: Sequence[str],
            refs: Refs) -> list[float]:
    """A per-sample metric scored against every reference of each sample (one call), best match kept."""
    lists = ref_lists(preds, refs)
    fp, fr, owner = flatten(preds, lists)
    return best(metric(fp, fr), owner, len(lists))
