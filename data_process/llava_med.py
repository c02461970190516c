"""LLaVA-Med (Li et al. 2023) alignment and instruction data -> records.

Both releases are already LLaVA-style (`llava_med_alignment_500k.json`, `llava_med_instruct_10k.json`,
`llava_med_instruct_60k.json`, `llava_med_instruct_60k_inline_mention.json`): a JSON list (or JSONL) of
`{"id", "image": "<name>.jpg", "conversations": [{"from": "human"|"gpt", "value"}...], "domain"?: {...}}`.
So this converter validates and normalises rather than translates:
- ids are kept as released (converted to str); a row without one is rejected; repeats follow the common id rule;
- image names resolve under --image_root to absolute paths; a missing image rejects the row (PMC downloads are often
  partial, so expect some);
- roles user/assistant are read as human/gpt; turns must alternate and end with an answer; all turns are kept;
- the `<image>` tag: the release puts it before or after the first question (at random); it is moved to the start
  of the first human turn, the position make_record uses for every other dataset. A tag in a later turn, or more
  tags than images, rejects the row; a missing tag is added (counted in notes);
- `--kind alignment` (Stage 1: meta.question_type "caption", single caption answer) or `instruct` (question_type
  "conversation"); `auto` reads it from the file name. answer_type is "open" for both.
- `domain` (e.g. {"chest_xray": true, "mri": false, ...}) is kept; modality is set when exactly one domain is true.
Files that are not conversations (`llava_med_instruct_fig_captions.json`, `*_qa50_*` eval files) are not supported.
Streams: rows are read one at a time (JSON list or JSONL) and written as they are converted, so the 500k alignment file
converts in bounded memory. A JSONL line that is not JSON / not UTF-8 is rejected by line number.

    python -m data_process.llava_med --input llava_med_alignment_500k.json --image_root images --out stage1.json
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator

from data_process.conversion.cli import module_main
from data_process.conversion.ids import IdRegistry
from data_process.conversion.image_paths import ImageResolver
from data_process.conversion.inputs import expand_inputs, progress
from data_process.conversion.report import Report
from data_process.conversion.splits import resolve_split
from medvl.jsonio import BadLine, DataError, iter_records
from medvl.schema import IMAGE_TAG, ROLES, strip_image_tags

DATASET = "llava_med"
KINDS = {"alignment": "caption", "instruct": "conversation"}
_ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}
_DOMAIN_MODALITY = {"chest_xray": "X-Ray", "mri": "MRI", "ct_scan": "CT", "histology": "histology", "gross": "gross"}


def kind_from_name(path: str | Path) -> str | None:
    name = Path(path).name.lower()
    found = [k for k in KINDS if k in name]
    return found[0] if len(found) == 1 else None


def normalize_conversations(turns, n_images: int) -> tuple[list[dict] | None, str | None, bool]:
    """(turns, None, tag_added) or (None, rejection reason, False). Leaves one leading tag per image in turn 0."""
    if not isinstance(turns, list) or not turns:
        return None, "missing_conversations", False
    out = []
    for i, t in enumerate(turns):
        role = _ROLES.get(str(t.get("from", "")).lower()) if isinstance(t, dict) else None
        if role is None or not isinstance(t.get("value"), str):
            return None, "bad_turn", False
        if role != ROLES[i % 2]:
            return None, "turns_not_alternating", False
        out.append({"from": role, "value": t["value"].strip()})
    if out[-1]["from"] != "gpt":
        return None, "last_turn_not_answer", False
    if any(not t["value"] for t in out if t["from"] == "gpt"):
        return None, "empty_answer", False
    if any(IMAGE_TAG in t["value"] for t in out[1:]):
        return None, "image_tag_outside_first_turn", False
    first, n_tags = strip_image_tags(out[0]["value"])
    if n_tags > n_images:
        return None, "more_image_tags_than_images", False
    out[0]["value"] = (IMAGE_TAG + "\n") * n_images + first
    return out, None, n_tags < n_images


def convert_stream(inputs, image_root, split: str | None = "train", kind: str = "auto", show_progress: bool = True,
                   allow_outside_root: bool = False) -> tuple[Iterator[dict], Report]:
    """(records as a generator, the Report it fills while consumed). Input problems that stop the whole
    conversion (unknown kind or split, missing file) are raised here, before any row is read."""
    paths = expand_inputs(inputs, patterns=("*.json", "*.jsonl"))
    plan = []
    for path in paths:
        file_kind = kind if kind != "auto" else kind_from_name(path)
        if file_kind not in KINDS:
            raise DataError(f"{path}: cannot tell alignment from instruct data by the file name; pass --kind")
        plan.append((path, file_kind, resolve_split(split, path)))
    report = Report(DATASET, paths)
    images, ids = ImageResolver(image_root, allow_outside_root), IdRegistry(report)

    def records() -> Iterator[dict]:
        for path, file_kind, file_split in plan:
            rows = iter_records(path, bad_lines="yield")
            for i, row in enumerate(progress(rows, f"llava_med {path.name}", enabled=show_progress)):
                report.read += 1
                if isinstance(row, BadLine):
                    report.reject(row.where, row.reason, row.detail)
                    continue
                rec = _convert_row(row, f"{path.name}#{i}", file_split, file_kind, images, ids, report)
                if rec is not None:
                    report.converted += 1
                    yield rec
    return records(), report


def convert(inputs, image_root, split: str | None = "train", kind: str = "auto",
            show_progress: bool = True, allow_outside_root: bool = False) -> tuple[list[dict], dict]:
    records, report = convert_stream(inputs, image_root, split, kind, show_progress, allow_outside_root)
    records = list(records)
    return records, report.as_dict()


def _convert_row(row, where, split, kind, images, ids, report) -> dict | None:
    if not isinstance(row, dict):
        report.reject(where, "row_not_an_object")
        return None
    native = row.get("id")
    if native is None or not str(native).strip():
        report.reject(where, "missing_id")
        return None
    base_id = str(native).strip()
    names = row.get("image")
    names = [] if names is None else names if isinstance(names, list) else [names]
    if not all(isinstance(n, str) and n.strip() for n in names):
        report.reject(base_id, "bad_image_field", where)
        return None
    paths = [images.path(n) for n in names]
    problems = [(why, p) for p in paths if (why := images.problem(p))]
    if problems:
        report.reject(base_id, *problems[0])
        return None
    turns, problem, tag_added = normalize_conversations(row.get("conversations"), len(paths))
    if problem:
        report.reject(base_id, problem, where)
        return None
    if kind == "alignment" and len(turns) != 2:
        report.reject(base_id, "alignment_not_single_turn", f"{where}: {len(turns)} turns")
        return None
    rid = ids.assign(base_id, (paths, turns))
    if rid is None:
        report.reject(base_id, "duplicate_row", where)
        return None
    report.notes["image_tag_added"] += tag_added
    domain = row.get("domain") if isinstance(row.get("domain"), dict) else None
    true_domains = [k for k, v in (domain or {}).items() if v is True]
    rec = {"id": rid}
    if paths:
        rec["image"] = paths[0] if len(paths) == 1 and not isinstance(row.get("image"), list) else paths
    rec["conversations"] = turns
    rec["meta"] = {"dataset": DATASET, "split": split, "answer_type": "open", "question_type": KINDS[kind],
                   "organ": None, "boxes": [], "kind": kind, "domain": domain,
                   "modality": _DOMAIN_MODALITY.get(true_domains[0]) if len(true_domains) == 1 else None}
    return rec


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", default="auto", choices=["auto", "alignment", "instruct"],
                   help="alignment (Stage 1 captions) or instruct (Stage 2 conversations); auto = from the file name")


def convert_from_args(args: argparse.Namespace):
    # streamed: records are written as they are converted; the report is final once they are all written
    records, report = convert_stream(args.input, args.image_root, split=args.split or "train", kind=args.kind,
                                     show_progress=not args.no_progress,
                                     allow_outside_root=getattr(args, "allow_outside_root", False))
    return records, report.as_dict


EPILOG = """examples:
  python -m data_process.llava_med --input llava_med_alignment_500k.json --image_root llava_med_images --out out/stage1.json
  python -m data_process.llava_med --input llava_med_instruct_60k_inline_mention.json --image_root llava_med_images \\
      --out out/stage2_instruct.json
(the split defaults to train: these are training sets)"""


def main(argv=None) -> int:
    return module_main(DATASET, __doc__.split("\n\n")[0], EPILOG, add_arguments, convert_from_args, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
