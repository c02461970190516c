"""Verifiable rewards for Stage 3 (GRPO): pure functions of one completion and its record, scored by the same rules
evaluation scores with, so the reward the policy climbs is the metric the comparison tables report.

    closed    1.0 when a yes/no or choice answer is right against any accepted answer (medvl.metrics.closed:
              "Yes, there is a lesion." matches "yes"; a choice answer matches after normalize_answer), else 0.0
    open_f1   token F1 with the best accepted answer (medvl.metrics.text.token_f1 + references.best_of)
    iou       IoU of the first box in the completion (parsed in the model family's format: families.parse_boxes)
              with the best-matching reference box (metrics.grounding.best_reference); no box: 0.0
    format    1.0 for a well-formed completion: an optional leading <think>...</think> with something inside, then a
              non-empty answer, and no other think tag anywhere; else 0.0
    format_think   the same with the <think> block required (reasoning-style training)

Which rewards a record gets (`applies`): closed on meta.answer_type "closed", open_f1 on "open" (missing: decided by
medvl.answers.infer_answer_type, the converters' rule), iou on meta.task "grounding" (never closed/open_f1 there),
format on every record. A reward that does not apply returns None: the record gives it weight 0 (TRL sums the
weighted rewards with nansum and averages each reward's logged mean over the records it applies to), not a 0 score.
With a leading <think> block, closed / open_f1 / iou score the text after it (the answer), never the reasoning.

`parse_rewards("closed:1.0,open_f1:0.5,iou:1.0,format:0.2")` (or the YAML mapping {closed: 1.0, ...}) gives the
weights in the order written.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from medvl.answers import infer_answer_type
from medvl.families import ModelFamily
from medvl.metrics.closed import closed_accuracy
from medvl.metrics.grounding import best_reference, iou, scale_box
from medvl.metrics.references import best_of
from medvl.metrics.text import token_f1

REWARDS = ("closed", "open_f1", "iou", "format", "format_think")
_THINK_BLOCK = re.compile(r"\s*<think>(.*?)</think>(.*)\Z", re.S)
_THINK_TAG = re.compile(r"</?think>")


# ------------------------------------------------------------------------------------------------ the completion
def answer_part(completion: str) -> str:
    """The answer of a completion: the text after a leading <think>...</think>; "" when a <think> is left open
    (reasoning without an answer is not graded as an answer); the whole completion otherwise."""
    m = _THINK_BLOCK.match(completion)
    if m:
        return m.group(2).strip()
    if completion.lstrip().startswith("<think>"):
        return ""
    return completion.strip()


def format_reward(completion: str, require_think: bool = False) -> float:
    """1.0 when the completion is [<think>non-empty</think>] non-empty answer, with no other think tag; else 0.0."""
    m = _THINK_BLOCK.match(completion)
    if m:
        thought, answer = m.group(1), m.group(2)
        ok = bool(thought.strip()) and bool(answer.strip()) and not _THINK_TAG.search(thought + answer)
    else:
        ok = not require_think and bool(completion.strip()) and not _THINK_TAG.search(completion)
    return float(ok)


# ------------------------------------------------------------------------------------------------ per reward
def closed_reward(completion: str, answers: Sequence[str]) -> float:
    """Correctness of a closed answer against every accepted answer (the best match counts)."""
    answer = answer_part(completion)
    return max(closed_accuracy([answer] * len(answers), list(answers)))


def open_f1_reward(completion: str, answers: Sequence[str]) -> float:
    """Token F1 with the best accepted answer."""
    return best_of(token_f1, [answer_part(completion)], [list(answers)])[0]


def reference_boxes(boxes: Sequence[Mapping], image_size) -> list[list[float]]:
    """meta.boxes as xyxy in pixels of `image_size` (a box stored for another size of the image is rescaled)."""
    return [scale_box(b["xyxy"], b.get("image_size"), image_size) for b in boxes]


def iou_reward(completion: str, boxes: Sequence[Mapping], family: ModelFamily, image_size, input_size) -> float:
    """IoU of the completion's first box (the family's format, in pixels of the original image) with the best
    reference box; 0.0 when there is no box or it is degenerate (as evaluation counts a missing box)."""
    parsed = family.parse_boxes(answer_part(completion), image_size, input_size)
    if not parsed:
        return 0.0
    pred = parsed[0][1]
    if not (all(math.isfinite(v) for v in pred) and pred[2] >= pred[0] and pred[3] >= pred[1]):
        return 0.0
    refs = reference_boxes(boxes, image_size)
    return iou(pred, refs[best_reference(pred, refs)])


# ------------------------------------------------------------------------------------------------ records
def accepted_answers(rec: Mapping) -> list[str]:
    """Every accepted answer of a record: meta.answers when the converter kept several, else the answer turn."""
    meta = rec.get("meta") or {}
    answers = meta.get("answers")
    if answers:
        return [answers] if isinstance(answers, str) else list(answers)
    return [str(rec["conversations"][-1]["value"])]


def answer_type(rec: Mapping) -> str:
    """meta.answer_type, or the converters' rule (medvl.answers) on the question and first answer when absent."""
    meta = rec.get("meta") or {}
    if meta.get("answer_type") in ("closed", "open"):
        return meta["answer_type"]
    question = next((t["value"] for t in rec["conversations"] if t.get("from") == "human"), "")
    return infer_answer_type(question, accepted_answers(rec)[0])


def applies(name: str, rec: Mapping) -> bool:
    """Whether reward `name` scores this record (module docstring)."""
    grounding = (rec.get("meta") or {}).get("task") == "grounding"
    if name == "iou":
        return grounding and bool((rec.get("meta") or {}).get("boxes"))
    if name in ("closed", "open_f1"):
        return not grounding and answer_type(rec) == ("closed" if name == "closed" else "open")
    if name in ("format", "format_think"):
        return True
    raise ValueError(f"unknown reward {name!r} (known: {', '.join(REWARDS)})")


def score(name: str, completion: str, rec: Mapping, family: ModelFamily | None = None, image_size=None,
          input_size=None) -> float | None:
    """Reward `name` of one completion for its record, or None where it does not apply. iou needs the family and
    the record's first image size (original and model input, as evaluation records them)."""
    if not applies(name, rec):
        return None
    if name == "closed":
        return closed_reward(completion, accepted_answers(rec))
    if name == "open_f1":
        return open_f1_reward(completion, accepted_answers(rec))
    if name == "iou":
        if family is None or image_size is None or input_size is None:
            raise ValueError(f"record {rec.get('id')!r}: the iou reward needs the model family and the image sizes")
        return iou_reward(completion, rec["meta"]["boxes"], family, image_size, input_size)
    return format_reward(completion, require_think=name == "format_think")


# ------------------------------------------------------------------------------------------------ the spec
def parse_rewards(spec: str | Mapping) -> dict[str, float]:
    """{reward: weight} from "closed:1.0,open_f1:0.5" (a bare name weighs 1.0) or a mapping; refused by name."""
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        items = []
        for part in [p.strip() for p in str(spec).split(",") if p.strip()]:
            name, _, weight = part.partition(":")
            items.append((name.strip(), weight.strip() or "1.0"))
    out: dict[str, float] = {}
    for name, weight in items:
        if name not in REWARDS:
            raise ValueError(f"--rewards: unknown reward {name!r} (known: {', '.join(REWARDS)})")
        if name in out:
            raise ValueError(f"--rewards: {name} is given twice")
        try:
            w = float(weight)
        except (TypeError, ValueError):
            raise ValueError(f"--rewards: weight of {name} must be a number, got {weight!r}") from None
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"--rewards: weight of {name} must be a finite number >= 0, got {weight!r}")
        out[name] = w
    if not out or not any(out.values()):
        raise ValueError(f"--rewards: no reward with a weight above 0 in {spec!r} (e.g. closed:1.0,open_f1:0.5)")
    return out
