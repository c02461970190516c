"""The generic converter of HF parquet / JSONL exports (question, answer, an image cell) used by PathVQA and MedPix."""
from __future__ import annotations

import base64
from collections import Counter
from typing import Any, Callable

from data_process.conversion.image_paths import ImageResolver
from data_process.conversion.image_store import ImageStore
from data_process.conversion.inputs import expand_inputs, iter_table, progress
from data_process.conversion.report import Report
from data_process.conversion.splits import canonical_split, resolve_split
from data_process.conversion.text import clean_text, reserved_tag_problem
from medvl.jsonio import BadLine, DataError, WriteError
from medvl.schema import make_record


def hf_image(value: Any, resolver: ImageResolver, store: ImageStore) -> str:
    """The image cell of an HF export: {"bytes", "path"} struct, a path string, or base64 bytes in JSONL.

    Raises ValueError(reason) for a row-level problem; the reason is the rejection key."""
    if value is None:
        raise ValueError("no_image")
    if isinstance(value, str):
        value = {"bytes": None, "path": value}
    if not isinstance(value, dict):
        raise ValueError("unsupported_image_value")
    data = value.get("bytes")
    if data:
        if isinstance(data, str):  # JSON cannot hold raw bytes: JSONL exports carry base64
            try:
                data = base64.b64decode(data, validate=True)
            except ValueError:
                raise ValueError("undecodable_image") from None
        try:
            return store.save(bytes(data))
        except WriteError:
            raise
        except ValueError:
            raise ValueError("undecodable_image") from None
    if value.get("path"):
        path = resolver.path(value["path"])
        problem = resolver.problem(path)
        if problem:
            raise ValueError(problem)
        return path
    raise ValueError("no_image")


def convert_hf_table(dataset: str, inputs, image_dir, image_root, split: str | None, image_columns: tuple[str, ...],
                     make_meta: Callable[[dict, str, str], dict], split_column: str | None = None,
                     show_progress: bool = True, allow_outside_root: bool = False) -> tuple[list[dict], dict]:
    """Rows of an HF parquet/JSONL export (question, answer, an image column) -> records `<dataset>-<split>-<n>`.

    n counts the rows of a split in input order, so ids are stable for the same input files. The split is the row's
    `split_column` when there is one (rows of another split than --split are skipped), else --split, else the file name.
    `make_meta(row, question, answer)` returns the dataset-specific meta (it must set answer_type)."""
    paths = expand_inputs(inputs)
    report = Report(dataset, paths)
    resolver, store = ImageResolver(image_root, allow_outside_root), ImageStore(image_dir)
    want = canonical_split(split) if split is not None else None
    counters: Counter = Counter()
    records = []
    for path in paths:
        total, rows = iter_table(path, required=("question", "answer"))
        for i, row in enumerate(progress(rows, f"{dataset} {path.name}", total=total, enabled=show_progress)):
            report.read += 1
            where = f"{path.name}#{i}"
            if isinstance(row, BadLine):
                report.reject(row.where, row.reason, row.detail)
                continue
            if not isinstance(row, dict):
                report.reject(where, "row_not_an_object")
                continue
            col = next((c for c in image_columns if c in row), None)
            if col is None:
                raise DataError(f"{path}: row {i} has no image column (one of {list(image_columns)})")
            row_split = row.get(split_column) if split_column else None
            if row_split is not None:
                s = canonical_split(row_split)
                if s is None:
                    report.reject(where, "unknown_split_value", f"{where}: {split_column}={row_split!r}")
                    continue
                if want is not None and s != want:
                    report.skipped[f"split_{s}"] += 1
                    continue
            else:
                s = resolve_split(split, path)
            rid = f"{dataset}-{s}-{counters[s]}"
            counters[s] += 1
            question, answer = clean_text(row.get("question")), clean_text(row.get("answer"))
            if not question or not answer:
                report.reject(rid, "empty_question" if not question else "empty_answer", where)
                continue
            if (tag := reserved_tag_problem(question, answer)):
                report.reject(rid, "reserved_tag_in_text", f"{where}: {tag}")
                continue
            try:
                image = hf_image(row[col], resolver, store)
            except WriteError:  # the disk's fault, not the row's
                raise
            except ValueError as e:
                report.reject(rid, str(e), where)
                continue
            records.append(make_record(rid, image, question, answer,
                                       {"dataset": dataset, "split": s, **make_meta(row, question, answer)}))
            report.converted += 1
    report.notes.update({"images_written": store.written, "images_reused": store.reused})
    return records, report.as_dict()
