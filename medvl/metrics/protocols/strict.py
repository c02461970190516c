"""strict: this project's own scoring (medvl/answers.py, medvl/metrics/closed.py, medvl/metrics/text.py), the rules
of the main comparison tables, as a protocol beside the field's.

Closed = the dataset's answer type (type_mapping.json's answer_type: VQA-RAD / SLAKE as released, PathVQA
yes/no). A closed sample is right when `closed_accuracy` says so: a yes/no reference is matched by meaning
(`medvl.answers.yes_no`: "Yes, there is a fracture" is yes, "Yes, there is no fracture" is neither, so wrong), any
other reference by equality after `normalize_answer`. Open samples: exact match after normalisation (accuracy) and
SQuAD token F1. With several accepted answers (meta.answers) a sample takes its best-matching one.
Generation: the model's own system turn, the question as it is, greedy, 64 new tokens (eval.generate's defaults).
"""
from __future__ import annotations

from medvl.metrics.closed import closed_accuracy
from medvl.metrics.protocols.base import Generation, MetricDef, Protocol, SampleScore
from medvl.metrics.text import exact_match, token_f1


def _best(fn, prediction: str, references: list[str]) -> float:
    return max(fn([prediction] * len(references), references))


def score(prediction: str, references: list[str], *, answer_type: str, dataset: str, question: str) -> SampleScore:
    closed = answer_type == "closed"
    acc = _best(closed_accuracy if closed else exact_match, prediction, references)
    metrics = {"accuracy": acc, "token_f1": _best(token_f1, prediction, references)}
    return SampleScore(closed, metrics)


PROTOCOL = Protocol(
    name="strict",
    title="strict (this project: normalised exact match, yes/no by meaning)",
    closed_means="the dataset's answer type (type_mapping.json answer_type)",
    rules="closed: yes/no reference matched by meaning (medvl.answers.yes_no; a contradicted answer such as 'Yes, "
          "there is no fracture' is wrong), other closed references by exact match after normalisation; open: exact "
          "match after normalisation (lowercase, punctuation -> space, articles dropped); token F1 on every sample; "
          "best over accepted answers",
    source="this repository: medvl/answers.py, medvl/metrics/closed.py, medvl/metrics/text.py",
    metrics=(MetricDef("accuracy", "accuracy (closed: closed accuracy, open: exact match)", ci=True),
             MetricDef("token_f1", "token F1", ci=True)),
    generation=Generation(system=None, max_new_tokens=64, suffixes={}, choose=lambda view: None,
                          decoding="greedy, 64 new tokens", source="eval/generate.py defaults"),
    scorer=score,
)
