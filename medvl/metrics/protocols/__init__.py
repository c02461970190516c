"""The field's scoring protocols for medical VQA, one module each, written from their sources' rules:

  strict      this project (medvl/answers.py, medvl/metrics/closed.py, text.py)
  llava_med   microsoft/LLaVA-Med llava/eval/run_eval.py (+ eval_metrics/)
  medevalkit  alibaba-damo-academy/MedEvalKit utils/{VQA_RAD,SLAKE,PATH_VQA}/*.py, utils/utils.py
  lmms_eval   EvolvingLMMs-Lab/lmms-eval lmms_eval/tasks/slake/utils.py

Each is a `Protocol` (medvl/metrics/protocols/base.py): its name, what "closed" means there, a per-sample scorer
returning that protocol's metrics in [0, 1], and its generation convention (system turn, prompt suffix, max new
tokens) with the source cited. `aggregate` turns per-sample scores into {category: {metric: value}}.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from medvl.metrics.protocols import llava_med, lmms_eval, medevalkit, strict
from medvl.metrics.protocols.base import Generation, MetricDef, Protocol, SampleScore

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (strict.PROTOCOL, llava_med.PROTOCOL, medevalkit.PROTOCOL,
                                                      lmms_eval.PROTOCOL)}
__all__ = ["PROTOCOLS", "Protocol", "Generation", "MetricDef", "SampleScore", "parse_names", "categories_of",
           "aggregate"]


def parse_names(text: str | Iterable[str] | None) -> list[str]:
    """Protocol names from "a,b" (or a list); None / "all" -> every protocol. ValueError names an unknown one."""
    if text is None or text == "all":
        return list(PROTOCOLS)
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown or not names:
        raise ValueError(f"unknown protocol(s) {unknown or text!r}: choose from {', '.join(PROTOCOLS)} (or all)")
    return list(dict.fromkeys(names))


def categories_of(closed: bool, dataset: str) -> list[str]:
    """The categories one sample counts in: overall, closed|open, dataset/<d>, dataset/<d>/closed|open."""
    kind = "closed" if closed else "open"
    return ["overall", kind, f"dataset/{dataset}", f"dataset/{dataset}/{kind}"]


def aggregate(scores: Sequence[SampleScore], datasets: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """{category: {metric: per-sample values}}; a metric is kept in a category only when every sample there has it
    (an open-only metric never averages over closed samples)."""
    members: dict[str, list[SampleScore]] = {}
    for s, d in zip(scores, datasets):
        for c in categories_of(s.closed, d or "unknown"):
            members.setdefault(c, []).append(s)
    out = {}
    for cat, group in members.items():
        common = set(group[0].metrics).intersection(*(g.metrics for g in group[1:]))
        out[cat] = {m: [g.metrics[m] for g in group] for m in group[0].metrics if m in common}
    return out
