"""Validate records through the exact preprocessing training and evaluation use; keep the good, report the rest.

Every input record ends up either in the clean output or in the report under a reason with its id:
`input == kept + rejected` always holds (checked before writing).

    python -m data_process.validate --model /path/or/hub-id --data train.json --out train.clean.json \
        [--max_len 2048] [--min_pixels 3136] [--max_pixels 1003520] [--image_root DIR]
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass, field

from tqdm import tqdm

from .io import read_records, write_json
from .schema import record_problems


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


def validate_records(records: list, processor, progress: bool = True) -> tuple[list[dict], ValidationReport]:
    """(clean records, report). `processor` is a train.preprocess.VLProcessor."""
    from train.preprocess import SampleError

    rep = ValidationReport(input=len(records))
    seen: set = set()
    kept = []
    for i, rec in enumerate(tqdm(records, desc="validate", disable=not progress, mininterval=2)):
        rid = rec.get("id", f"<record #{i}>") if isinstance(rec, dict) else f"<record #{i}>"
        problems = record_problems(rec)
        if problems:
            rep.rejected["malformed_record"].append(rid)
            rep.details[str(rid)] = "; ".join(problems)
            continue
        if rid in seen:
            rep.rejected["duplicate_id"].append(rid)
            continue
        seen.add(rid)
        try:
            enc = processor.encode(rec, train=True)
        except SampleError as e:
            rep.rejected[e.reason].append(rid)
            rep.details[str(rid)] = str(e)
            continue
        rep.max_tokens = max(rep.max_tokens, len(enc))
        kept.append(rec)
    rep.kept = len(kept)
    assert rep.input == rep.kept + rep.n_rejected, "validation lost records"
    return kept, rep


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint dir or hub id (its tokenizer + image processor are used)")
    p.add_argument("--data", required=True, help="records (.json list or .jsonl)")
    p.add_argument("--out", required=True, help="clean records (.json); the report goes to <out>.report.json")
    p.add_argument("--max_len", type=int, default=2048)
    p.add_argument("--min_pixels", type=int, default=None)
    p.add_argument("--max_pixels", type=int, default=None)
    p.add_argument("--image_root", default=None, help="base dir for relative image paths")
    p.add_argument("--truncation", default="reject", choices=["reject", "text_tail"])
    a = p.parse_args(argv)

    from train.loader import load_processor

    processor = load_processor(a.model, min_pixels=a.min_pixels, max_pixels=a.max_pixels, max_len=a.max_len,
                               image_root=a.image_root, truncation=a.truncation)
    kept, rep = validate_records(read_records(a.data), processor)
    write_json(a.out, kept)
    write_json(a.out + ".report.json", rep.as_dict())
    print(rep.summary())
    print(f"clean data: {a.out}\nreport: {a.out}.report.json")


if __name__ == "__main__":
    main()
