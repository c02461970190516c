"""Validate records through the exact preprocessing training and evaluation use; keep the good, report the rest.

Every input record ends up either in the clean output or in the report under a reason with its id:
`input == kept + rejected` always holds (checked before writing). A .jsonl line that is not JSON or not UTF-8 is
rejected as `<file>:line N`. Records stream from input to output (bounded memory for any file size).

    python -m data_process.validate --model_name_or_path /path/or/hub-id --data train.json --out train.clean.json \
        [--max_len 2048] [--min_pixels 3136] [--max_pixels 1003520] [--image_root DIR] [--allow_outside_root]
    # structure only (ids, turns, tags, boxes; no images, no model) -- a quick pass over a huge file:
    python -m data_process.validate --schema_only --data big.jsonl --out big.clean.jsonl
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from data_process.conversion.cli import report_path
from data_process.validation_cache import cache_key, lookup, store
from medvl.jsonio import BadLine, DataError, iter_records, read_records, write_json, write_records
from medvl.paths import MAX_IMAGE_BYTES
from medvl.samples import SampleError
from medvl.schema import record_problems


@dataclass
class ValidationReport:
    input: int = 0
    kept: int = 0
    rejected: dict[str, list] = field(default_factory=lambda: defaultdict(list))
    details: dict[str, str] = field(default_factory=dict)
    max_tokens: int = 0

    @property
    def n_rejected(self) -> int:
        return sum(len(v) for v in self.rejected.values())

    def as_dict(self) -> dict:
        return {"input": self.input, "kept": self.kept, "rejected": self.n_rejected,
                "rejected_by_reason": {k: {"count": len(v), "ids": v} for k, v in sorted(self.rejected.items())},
                "details": self.details, "max_tokens_kept": self.max_tokens}

    def summary(self) -> str:
        reasons = ", ".join(f"{k}: {len(v)}" for k, v in sorted(self.rejected.items())) or "none"
        return f"{self.input} records: {self.kept} kept, {self.n_rejected} rejected ({reasons})"

    def reject(self, rid, reason: str, detail: str | None = None) -> None:
        self.rejected[reason].append(rid)
        if detail:
            self.details[str(rid)] = detail

    def check(self) -> None:
        if self.input != self.kept + self.n_rejected:
            raise AssertionError(f"validation lost records: {self.input} in != {self.kept} kept + "
                                 f"{self.n_rejected} rejected")


def iter_valid(records: Iterable, processor, rep: ValidationReport) -> Iterator[dict]:
    """Yield the records that pass, counting every input (kept or rejected with its reason) in `rep`.
    `processor` is a medvl.encoding.VLProcessor, or None to check structure only (no image decode)."""
    seen: set = set()
    for i, rec in enumerate(records):
        rep.input += 1
        if isinstance(rec, BadLine):
            rep.reject(rec.where, rec.reason, rec.detail)
            continue
        rid = rec.get("id", f"<record #{i}>") if isinstance(rec, dict) else f"<record #{i}>"
        problems = record_problems(rec)
        if problems:
            rep.reject(rid, "malformed_record", "; ".join(problems))
            continue
        if str(rid) in seen:  # 7 and "7" are one id (every later stage keys ids as strings)
            rep.reject(rid, "duplicate_id")
            continue
        seen.add(str(rid))
        if processor is not None:
            try:
                enc = processor.encode(rec, train=True)
            except SampleError as e:
                rep.reject(rid, e.reason, str(e))
                continue
            rep.max_tokens = max(rep.max_tokens, len(enc))
        rep.kept += 1
        yield rec


def validate_records(records: Iterable, processor, progress: bool = True) -> tuple[list[dict], ValidationReport]:
    """(clean records, report). `processor` is a medvl.encoding.VLProcessor (None: structure only)."""
    rep = ValidationReport()
    kept = list(iter_valid(tqdm(records, desc="validate", disable=not progress, mininterval=2), processor, rep))
    rep.check()
    return kept, rep


def validate_cached(records: list, processor, progress: bool = True) -> tuple[list[dict], dict, str | None]:
    """validate_records, reusing the verdict on the same records, images and preprocessing
    (data_process/validation_cache.py): (clean records, report dict, the cache file reused or None)."""
    key = cache_key(records, processor)
    hit = lookup(key, records)
    if hit is not None:
        return hit
    kept, rep = validate_records(records, processor, progress=progress)
    if key is not None:
        store(key, kept, rep.as_dict())
    return kept, rep.as_dict(), None


def summary_of(report: dict) -> str:
    """ValidationReport.summary() of a report dict (as_dict's form)."""
    rep = ValidationReport(input=report["input"], kept=report["kept"])
    for reason, entry in report.get("rejected_by_reason", {}).items():
        rep.rejected[reason] = list(entry["ids"])
    return rep.summary()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name_or_path", "--model", dest="model_name_or_path", default=None, metavar="PATH",
                   help="checkpoint dir or hub id (its tokenizer + image processor are used); --model: old name")
    p.add_argument("--schema_only", action="store_true",
                   help="check structure only (ids, turns, <image> tags, boxes): no model, no image decode")
    p.add_argument("--data", "--input", dest="data", required=True, help="records (.json list or .jsonl)")
    p.add_argument("--out", required=True, help="clean records (.json list or .jsonl, by suffix); "
                                                "the report goes to OUT.report.json (as convert's: "
                                                "train.clean.json -> train.clean.report.json)")
    p.add_argument("--max_len", type=int, default=2048)
    p.add_argument("--min_pixels", type=int, default=None)
    p.add_argument("--max_pixels", type=int, default=None)
    p.add_argument("--image_root", default=None, help="base dir for relative image paths")
    p.add_argument("--truncation", default="reject", choices=["reject", "text_tail"])
    p.add_argument("--allow_outside_root", action="store_true",
                   help="accept relative image paths that leave --image_root (../..); refused by default")
    p.add_argument("--max_image_bytes", type=int, default=MAX_IMAGE_BYTES,
                   help="an image file larger than this is rejected (image_file_too_large) before it is opened")
    p.add_argument("--no_progress", action="store_true")
    a = p.parse_args(argv)
    if not a.schema_only and not a.model_name_or_path:
        p.error("--model_name_or_path is required (or --schema_only)")

    processor = None
    if not a.schema_only:
        # lazy: loading imports torch (~200 MiB), which --schema_only must not pay (tests/reliability/test_streaming.py)
        from medvl.checkpoint_path import CheckpointNotFound
        from medvl.loading import load_processor

        try:
            processor = load_processor(a.model_name_or_path, min_pixels=a.min_pixels, max_pixels=a.max_pixels,
                                       max_len=a.max_len, image_root=a.image_root, truncation=a.truncation,
                                       allow_outside_root=a.allow_outside_root, max_image_bytes=a.max_image_bytes)
        except CheckpointNotFound as e:  # a wrong --model_name_or_path: one line, no traceback
            raise SystemExit(f"error: {e}") from None
    rep = ValidationReport()
    records = tqdm(iter_records(a.data, bad_lines="yield"), desc="validate", disable=a.no_progress, mininterval=2)
    try:
        write_records(a.out, iter_valid(records, processor, rep))
        rep.check()
        write_json(report_path(a.out), rep.as_dict())
    except DataError as e:  # a broken .json list (a .jsonl's bad lines are rejected one by one), a full disk
        raise SystemExit(f"error: {e}") from None
    if processor is not None:  # training on the clean file then skips its own validation pass
        clean = read_records(a.out)
        key = cache_key(clean, processor)
        if key is not None:
            store(key, clean, {"input": len(clean), "kept": len(clean), "rejected": 0, "rejected_by_reason": {},
                               "details": {}, "max_tokens_kept": rep.max_tokens,
                               "validated_by": f"python -m data_process.validate (from {Path(a.data).resolve()})"})
    print(rep.summary())
    print(f"clean data: {Path(a.out).resolve()}\nreport: {report_path(a.out).resolve()}")


if __name__ == "__main__":
    main()
