"""The one question-categorisation rule: which closed_type a closed question has (data_process.data_trans writes
it into type_mapping.json; eval falls back to it for an id missing there).

`closed_type(question, answer, native)`, first match wins; question and answer are compared in the form of
`medvl.answers.normalize_answer` (lowercase, punctuation as spaces, so "X-ray" reads "x ray"); `native` is the
set of the dataset's own lower-case category labels:
  1. yes_no    `medvl.answers.yes_no(answer)` is not None.
  2. modality  the native category says modality, or the question asks for it ("modality", "what kind/type of
               scan|image|imaging", "imaging technique|method", "weighted", "what scan"), or the answer is an
               imaging technique (CT, MRI/MR, X-ray, ultrasound, PET, T1/T2/FLAIR, angiogram...).
  3. position  the native category says position (VQA-RAD POS, SLAKE Position), or the question asks where /
               which side / location / position, or it names a side (left, right): in a choice question
               ("... X or Y?") only when the options are sides ("left or right", "the left kidney or the
               right"), because a choice between named structures that happens to name a side ("Which is
               smaller, liver or right kidney?") asks about the structures, not a position.
  4. general   everything else (choice questions about size, plane, organ, sex, ...).
"""
from __future__ import annotations

import re

from medvl.answers import normalize_answer, yes_no
from medvl.schema import strip_image_tags

CLOSED_TYPES = ("yes_no", "modality", "position", "general")
_MODALITY_Q = re.compile(r"\bmodalit(y|ies)\b|\b(kind|type|form) of (scan|image|imaging)\b|"
                         r"\bimaging (technique|method|modality)\b|\bweight(ed|ing)\b|\bwhat scan\b")
_MODALITY_A = re.compile(r"^(ct|cta|mri?|mra|x ?ray|xr|radiograph\w*|plain film|us|ultrasound|us d|doppler|pet|"
                         r"pet ct|t1|t2|flair|dwi|adc|angiogra\w*|mammogra\w*|fluoroscop\w*|nuclear medicine)\b")
_POSITION_Q = re.compile(r"\bwhere\b|\bwhich side\b|\blocat(ion|ed)\b|\bposition\b")
_SIDE = re.compile(r"\b(left|right)\b")
# options that are sides: "left or right", "right side or left", "left kidney or the right (kidney)"
_SIDE_CHOICE = re.compile(r"\b(left|right)( \w+)? or (the )?(left|right)\b")


def closed_type(question: str, answer: str, native: set[str]) -> str:
    """closed_type of a closed question (rules in the module docstring)."""
    if yes_no(answer) is not None:
        return "yes_no"
    q, a = normalize_answer(question, keep_articles=True), normalize_answer(answer)
    if "modality" in native or _MODALITY_Q.search(q) or _MODALITY_A.match(a):
        return "modality"
    choice = " or " in f" {q} "
    if (native & {"pos", "position"} or _POSITION_Q.search(q)
            or (_SIDE_CHOICE.search(q) if choice else _SIDE.search(q))):
        return "position"
    return "general"


NATIVE_KEY = {"vqa_rad": "question_type", "slake": "content_type", "vqa_med2019": "category"}


def _native_tags(meta: dict) -> set[str]:
    """Lower-case native category labels of a record (a VQA-RAD combination gives several)."""
    tags = set(t.lower() for t in meta.get("question_types") or [])
    for key in ("question_type", "content_type", "category"):
        value = meta.get(key)
        if isinstance(value, str):
            tags |= {t.strip().lower() for t in value.split(",") if t.strip()}
    return tags


def _qa(record: dict) -> tuple[str, str]:
    turns = record.get("conversations") or []
    question = next((t["value"] for t in turns if t.get("from") == "human"), "")
    answer = next((t["value"] for t in reversed(turns) if t.get("from") == "gpt"), "")
    return strip_image_tags(question)[0], answer


def categorize(record: dict) -> dict:
    """{"answer_type", "closed_type" (closed only), "dataset", native category}: pure, the rules of the module doc."""
    meta = record.get("meta") or {}
    question, answer = _qa(record)
    answer_type = str(meta.get("answer_type") or "").lower()
    if answer_type not in ("closed", "open"):
        answer_type = "closed" if yes_no(answer) is not None else "open"
    dataset = meta.get("dataset") or "unknown"
    out = {"answer_type": answer_type}
    if answer_type == "closed":
        out["closed_type"] = closed_type(question, answer, _native_tags(meta))
    out["dataset"] = dataset
    key = NATIVE_KEY.get(dataset, "question_type")
    if meta.get(key) is not None:
        out[key] = meta[key]
    return out


# Region tasks (a box in the question, a label or caption as answer; data_process/grounding_sft.py, med_grit.py) are
# grounding work: their own categories, never in overall, never per dataset.
REGION_TASKS = ("region_classification", "region_caption")


def category_names(task: str, answer_type: str, closed_type: str | None = None, native: dict | None = None,
                   dataset: str | None = None) -> list[str]:
    """The evaluation categories one text answer falls in; metric tables and perplexity both group by these.

    A VQA question (task "vqa"): "overall", its answer_type ("closed"/"open"), "closed/<closed_type>" and
    "native/<field>/<value>" per native category. Any other task (caption, region tasks): the task's name only,
    never "overall". "dataset/<name>" when `dataset` is given (callers pass it when more than one dataset is
    scored), except for region tasks, which belong to grounding."""
    if task == "vqa":
        names = ["overall", answer_type] + ([f"closed/{closed_type}"] if closed_type else [])
        names += [f"native/{f}/{v}" for f, v in sorted((native or {}).items())]
    else:
        names = [task]
    if dataset is not None and task not in REGION_TASKS:
        names.append(f"dataset/{dataset}")
    return names
