"""Which categories each text answer of a predictions file is scored in (the names come from
medvl.categories.category_names, the rule perplexity groups by as well).

answer_type / closed_type / native fields come from type_mapping.json (data_process/data_trans.py); an id missing
there falls back to the prediction row's answer_type and medvl.categories.closed_type (the rule type_mapping.json
was written with), and is counted under the result's "data_issues".
"""
from __future__ import annotations

from collections import Counter

from medvl.categories import CLOSED_TYPES, REGION_TASKS, category_names, closed_type
from medvl.jsonio import DataError

BASE_CATEGORIES = ("overall", "closed", *(f"closed/{t}" for t in CLOSED_TYPES), "open", "caption", "grounding",
                   *REGION_TASKS)
# The native category fields data_process/data_trans.py writes (VQA-RAD question_type, SLAKE content_type,
# VQA-Med category; other datasets question_type). Other fields are not categories.
NATIVE_FIELDS = ("question_type", "content_type", "category")


def native_fields(entry: dict) -> dict:
    """The native categories of a type_mapping entry."""
    return {k: v for k, v in entry.items() if k in NATIVE_FIELDS and isinstance(v, (str, int, float))}


def sample_info(row: dict, mapping: dict[str, dict], issues: Counter) -> dict:
    """answer_type, closed_type, dataset and native fields of one VQA/caption row (mapping first)."""
    entry = mapping.get(row["id"])
    if entry is None:
        issues["missing_from_type_mapping"] += 1
        entry = {}
    answer_type = str(entry.get("answer_type") or row.get("answer_type") or "").lower()
    if not answer_type and row["task"] == "caption":
        answer_type = "open"
    if answer_type not in ("closed", "open"):
        raise DataError(f"id {row['id']!r}: no answer_type ('closed'/'open') in type_mapping.json or the prediction row")
    ctype = entry.get("closed_type") if answer_type == "closed" else None
    if answer_type == "closed" and ctype not in CLOSED_TYPES:
        ctype = closed_type(row.get("question") or "", row["reference"], set())
        issues["closed_type_inferred"] += 1
    return {"answer_type": answer_type, "closed_type": ctype, "native": native_fields(entry),
            "dataset": str(entry.get("dataset") or row.get("dataset") or "unknown")}


def assign_categories(text_rows: list[dict], mapping: dict[str, dict]) -> tuple[dict[str, list[int]], list[dict], Counter]:
    """({category: indices into text_rows}, per-row info, data issues)."""
    issues: Counter = Counter()
    infos = [sample_info(r, mapping, issues) for r in text_rows]
    several = len({i["dataset"] for r, i in zip(text_rows, infos) if r["task"] not in REGION_TASKS}) > 1
    cats: dict[str, list[int]] = {}
    for k, (row, info) in enumerate(zip(text_rows, infos)):
        for n in category_names(row["task"], info["answer_type"], info["closed_type"], info["native"],
                                info["dataset"] if several else None):
            cats.setdefault(n, []).append(k)
    return dict(sorted(cats.items(), key=lambda kv: category_order(kv[0]))), infos, issues


def category_order(name: str) -> tuple:
    """Table order: the base categories, then per dataset, then native categories."""
    if name in BASE_CATEGORIES:
        return (0, BASE_CATEGORIES.index(name), name)
    return (1 if name.startswith("dataset/") else 2, 0, name)
