"""What a scoring protocol is: a record of its rules, its generation convention and its per-sample scorer.

Why a record per protocol: the same predictions score ~20 points apart under the field's conventions (what counts
as "closed", substring vs exact match, which normalisation). Each convention is written once, from its documented
rules and source, so a table can say which one made a number and put it beside published numbers of the same one.

    from medvl.metrics.protocols import PROTOCOLS
    p = PROTOCOLS["medevalkit"]
    p.score_sample("Yes, there is no fracture", ["no"], answer_type="closed", dataset="vqa_rad")
    # -> SampleScore(closed=True, metrics={"accuracy": 0.0})   (both "yes" and "no" appear)

A scorer is pure: (prediction, accepted references, the dataset's answer type, dataset name, question) in, per-sample
values in [0, 1] out. `closed` is the protocol's own reading of "closed" (the dataset's answer type, or a yes/no
reference), so the same sample may be closed under one protocol and open under another.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence


@dataclass(frozen=True)
class Generation:
    """How the protocol's own runs prompt and decode. `suffix(record_view)` is the text appended to the question
    (chosen per record by the protocol's rule); `system` None = the model's chat template default."""
    system: str | None
    max_new_tokens: int
    suffixes: Mapping[str, str]  # name -> text, every suffix this convention can append (recorded in run_info)
    choose: Callable[[dict], str | None]  # record view {"reference", "answer_type", "dataset", "lang"} -> suffix name
    decoding: str  # what the source does, and how this project departs from it
    source: str


@dataclass(frozen=True)
class MetricDef:
    name: str
    label: str
    ci: bool = False  # bootstrap CI reported (the protocol's headline numbers)


@dataclass(frozen=True)
class SampleScore:
    closed: bool
    metrics: dict[str, float]


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    closed_means: str  # "the dataset's answer type" / "a yes/no reference", in words for the tables
    rules: str  # one paragraph: how a sample is scored
    source: str  # repo + path (commit) or paper
    metrics: tuple[MetricDef, ...]
    generation: Generation
    scorer: Callable[..., SampleScore] = field(repr=False)
    datasets_note: str = ""  # where the source's rules stop (datasets it does not define)

    def score_sample(self, prediction: str, references: Sequence[str], *, answer_type: str, dataset: str,
                     question: str = "") -> SampleScore:
        if not isinstance(prediction, str):
            raise TypeError(f"prediction is {type(prediction).__name__}, expected str")
        if not references or any(not isinstance(r, str) or not r.strip() for r in references):
            raise ValueError(f"empty or missing reference answer {references!r}: the sample cannot be scored")
        if answer_type not in ("closed", "open"):
            raise ValueError(f"answer_type must be 'closed' or 'open', got {answer_type!r}")
        return self.scorer(prediction, list(references), answer_type=answer_type, dataset=(dataset or "").lower(),
                           question=question)

    def label(self, metric: str) -> str:
        return next((m.label for m in self.metrics if m.name == metric), metric)

    def suffix_for(self, record_view: dict) -> str:
        name = self.generation.choose(record_view)
        return self.generation.suffixes[name] if name else ""
