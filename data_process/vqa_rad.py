"""VQA-RAD (Lau et al. 2018) -> records.

Two released layouts, told apart by their fields:
- OSF `VQA_RAD Dataset Public.json` (14 fields): the split is in `phrase_type` (`test_freeform`/`test_para` = the 451
  test questions, everything else train). Ids are `vqarad-<qid>`.
- MEVF `mevf_trainset.json` / `mevf_testset.json` (8 fields): its own qid numbering, so ids are `vqarad-mevf-<qid>`;
  the split comes from the file name (or --split).

Quirks handled: `qid` int or str; `answer_type` "CLOSED " (trailing space); `answer` sometimes an int; `question_type`
typos (ATRIB, PRSE, Other) and combinations ("POS, PRES"). Question types are mapped to the canonical set
PRES POS ABN OTHER MODALITY SIZE PLANE ATTRIB ORGAN COLOR COUNT; a combination becomes `question_types` (list, canonical
order) and `question_type` (the list joined with ", "); the released value stays in `question_type_raw`.
An unknown question or answer type rejects the row; so does a qid that is null / not an int or string (missing_qid /
invalid_qid, named by row index) and `<image>` / `<region>` inside the text (reserved_tag_in_text). With --split on the OSF file, rows of the other split are counted
as skipped.

    python -m data_process.vqa_rad --input "VQA_RAD Dataset Public.json" --image_root "VQA_RAD Image Folder" --out vqa_rad.json
"""
from __future__ import annotations

import argparse

from data_process.conversion.cli import module_main
from data_process.conversion.ids import IdRegistry
from data_process.conversion.image_paths import ImageResolver
from data_process.conversion.inputs import expand_inputs, progress, read_json_list
from data_process.conversion.report import Report
from data_process.conversion.splits import canonical_split, resolve_split
from data_process.conversion.text import clean_text, reserved_tag_problem
from medvl.schema import make_record

DATASET = "vqa_rad"
QUESTION_TYPES = ("PRES", "POS", "ABN", "OTHER", "MODALITY", "SIZE", "PLANE", "ATTRIB", "ORGAN", "COLOR", "COUNT")
_QT_ALIASES = {"ATRIB": "ATTRIB", "PRSE": "PRES"}
_ORGANS = {"HEAD": "head", "CHEST": "chest", "ABD": "abdomen"}


def canonical_question_types(raw) -> list[str] | None:
    """["POS", "PRES"] for "PRES, POS"; None when any part is not a known type."""
    parts = [p.strip().upper() for p in str(raw or "").split(",") if p.strip()]
    parts = [_QT_ALIASES.get(p, p) for p in parts]
    if not parts or any(p not in QUESTION_TYPES for p in parts):
        return None
    return sorted(set(parts), key=QUESTION_TYPES.index)


def _layout(rows: list) -> str:
    first = next((r for r in rows if isinstance(r, dict)), {})
    return "osf" if "qid_linked_id" in first or str(first.get("phrase_type", "")).startswith("test_") else "mevf"


def convert(inputs, image_root, split: str | None = None, show_progress: bool = True,
            allow_outside_root: bool = False) -> tuple[list[dict], dict]:
    paths = expand_inputs(inputs, patterns=("*.json",))
    report = Report(DATASET, paths)
    images = ImageResolver(image_root, allow_outside_root)
    ids = IdRegistry(report)
    records = []
    for path in paths:
        rows = read_json_list(path)
        layout = _layout(rows)
        file_split = None if layout == "osf" else resolve_split(split, path)
        want = canonical_split(split) if split is not None else None
        for i, row in enumerate(progress(rows, f"vqa_rad {path.name}", enabled=show_progress)):
            report.read += 1
            rec = _convert_row(row, f"{path.name}#{i}", layout, file_split, want, images, ids, report)
            if rec is not None:
                records.append(rec)
                report.converted += 1
    return records, report.as_dict()


def _convert_row(row, where, layout, file_split, want, images, ids, report) -> dict | None:
    qid = report.row_qid(row, where)
    if qid is None:
        return None
    base_id = f"vqarad-{qid}" if layout == "osf" else f"vqarad-mevf-{qid}"
    if layout == "osf":
        split = "test" if str(row.get("phrase_type", "")).startswith("test") else "train"
        if want is not None and split != want:
            report.skipped[f"split_{split}"] += 1
            return None
    else:
        split = file_split
    question, answer = clean_text(row.get("question")), clean_text(row.get("answer"))
    answer_type = str(row.get("answer_type", "")).strip().lower()
    qtypes = canonical_question_types(row.get("question_type"))
    problem = ("empty_question" if not question else "empty_answer" if not answer
               else "unknown_answer_type" if answer_type not in ("open", "closed")
               else "unknown_question_type" if qtypes is None
               else "missing_image_name" if not row.get("image_name") else None)
    if problem:
        report.reject(base_id, problem, f"{where}: answer_type={row.get('answer_type')!r} "
                                        f"question_type={row.get('question_type')!r}")
        return None
    if (tag := reserved_tag_problem(question, answer)):
        report.reject(base_id, "reserved_tag_in_text", f"{where}: {tag}")
        return None
    image = images.path(str(row["image_name"]))
    if (why := images.problem(image)):
        report.reject(base_id, why, image)
        return None
    rid = ids.assign(base_id, (image, question, answer))
    if rid is None:
        report.reject(base_id, "duplicate_row", where)
        return None
    organ = str(row.get("image_organ", "")).strip()
    meta = {"dataset": DATASET, "split": split, "answer_type": answer_type, "question_type": ", ".join(qtypes),
            "organ": _ORGANS.get(organ.upper(), organ.lower() or None), "modality": None, "boxes": [],
            "question_types": qtypes, "question_type_raw": row.get("question_type"), "qid": row.get("qid"),
            "phrase_type": row.get("phrase_type"), "source": layout}
    if layout == "osf":
        meta["qid_linked_id"] = row.get("qid_linked_id")
    return make_record(rid, image, question, answer, meta)


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def convert_from_args(args: argparse.Namespace):
    return convert(args.input, args.image_root, split=args.split, show_progress=not args.no_progress,
                   allow_outside_root=getattr(args, "allow_outside_root", False))


EPILOG = """examples:
  python -m data_process.vqa_rad --input "data/vqa_rad/VQA_RAD Dataset Public.json" \\
      --image_root "data/vqa_rad/VQA_RAD Image Folder" --out out/vqa_rad.json
  python -m data_process.vqa_rad --input data/vqa_rad/mevf_trainset.json data/vqa_rad/mevf_testset.json \\
      --image_root "data/vqa_rad/VQA_RAD Image Folder" --out out/vqa_rad_mevf.json"""


def main(argv=None) -> int:
    return module_main(DATASET, __doc__.split("\n\n")[0], EPILOG, add_arguments, convert_from_args, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
