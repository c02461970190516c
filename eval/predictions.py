"""Reading what a generation run wrote: predictions.jsonl rows, run_info.json beside them, the type mapping, and the
model family named there (it decides how boxes are parsed).

Bad input raises DataError naming the file, the line or id and the reason.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from medvl.families import ModelFamily, get_family
from medvl.jsonio import DataError, iter_jsonl, read_json


def load_type_mapping(type_mapping: str | os.PathLike | Mapping | None) -> dict[str, dict]:
    """{id: entry} from a path or a dict. Entries that are not per-id dicts (e.g. a "categories" summary) are skipped."""
    if type_mapping is None:
        return {}
    data = read_json(type_mapping) if not isinstance(type_mapping, Mapping) else type_mapping
    if not isinstance(data, Mapping):
        raise DataError(f"{type_mapping}: expected a JSON object {{id: {{answer_type, ...}}}}")
    return {str(k): dict(v) for k, v in data.items() if isinstance(v, Mapping) and "answer_type" in v}


def accepted_references(row: dict, where) -> list[str]:
    """Every accepted answer of a text row: `reference` (a string or a list) then `answers` (the record's
    meta.answers, e.g. VQA-Med 2019 alternatives), duplicates dropped, the first first. DataError when there is
    none or one is empty or not a string."""
    forms: list = []
    for value in (row.get("reference"), row.get("answers")):
        forms += value if isinstance(value, list) else [] if value is None else [value]
    if not forms or any(not isinstance(f, str) or not f.strip() for f in forms):
        raise DataError(f"{where}: id {row['id']!r}: empty or missing reference answer (reference "
                        f"{row.get('reference')!r}, answers {row.get('answers')!r}); it cannot be scored")
    return list(dict.fromkeys(forms))


def load_predictions(pred_path: str | os.PathLike) -> list[dict]:
    """Rows of a predictions.jsonl, validated: a bad row raises DataError naming the line/id and the reason."""
    rows, seen = [], {}
    for lineno, row in enumerate(iter_jsonl(pred_path), 1):
        if not isinstance(row, dict) or "id" not in row:
            raise DataError(f"{pred_path}: line {lineno} has no 'id'")
        rid = str(row["id"])
        if rid in seen:
            raise DataError(f"{pred_path}: id {rid!r} on lines {seen[rid]} and {lineno}; ids must be unique")
        seen[rid] = lineno
        if not isinstance(row.get("prediction"), str):
            raise DataError(f"{pred_path}: id {rid!r}: 'prediction' must be a string, got {row.get('prediction')!r}")
        rows.append({**row, "id": rid, "task": row.get("task") or "vqa"})
    if not rows:
        raise DataError(f"{pred_path}: no predictions")
    return rows


def read_run_info(pred_path: str | os.PathLike) -> dict | None:
    p = Path(pred_path).parent / "run_info.json"
    return read_json(p) if p.exists() else None


def resolve_family(family, run_info: dict | None, pred_path=None) -> ModelFamily | None:
    """ModelFamily from an explicit name/object, else run_info.json's "family"; None when neither says."""
    if isinstance(family, ModelFamily):
        return family
    name = family or (run_info or {}).get("family")
    return get_family(name) if name else None
