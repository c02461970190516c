"""SLAKE 1.0 (Liu et al. 2021) -> records, with the organ/lesion boxes of `imgs/xmlabN/detection.json`.

Input: the official `train.json` / `validate.json` / `test.json` (split from the file name or --split); `--image_root` is
the `imgs` folder that holds `xmlabN/source.jpg`. Ids are `slake-<qid>`.

- `--lang en|zh|all` (default en): rows of another language are counted as skipped.
- `answer_type` OPEN/CLOSED is kept as released: CLOSED also covers choice questions ("Which is bigger, the liver or the
  spleen?"), not only yes/no. `question_type` is the SLAKE `content_type`; content_type, base_type, location (also as
  `organ`, lower case), modality, triple, q_lang, img_id stay in meta.
- Boxes: detection.json holds `[{"Liver": [x, y, w, h]}, ...]`, x,y the top-left corner in pixels of source.jpg. They
  become `{"label", "xyxy": [x, y, x+w, y+h], "image_size": [W, H]}` (size read from the image) on every record of that
  image. A box up to 1 px outside the image is clipped; further outside, with w/h <= 0 or with NaN / infinite numbers (box_not_finite), it is dropped and counted
  under the report's `boxes.rejected` (per image, not per record). A missing detection.json means no boxes (counted as
  `boxes.images_without_detection_json`); a malformed one raises DataError.

    python -m data_process.slake --input Slake1.0/test.json --image_root Slake1.0/imgs --out slake_test.json
"""
from __future__ import annotations

import argparse
import copy
import math
import os
from collections import Counter, defaultdict
from pathlib import Path

from data_process.conversion.cli import module_main
from data_process.conversion.ids import IdRegistry
from data_process.conversion.image_paths import ImageResolver, image_size
from data_process.conversion.inputs import expand_inputs, progress, read_json_list
from data_process.conversion.report import Report
from data_process.conversion.splits import resolve_split
from data_process.conversion.text import clean_text, reserved_tag_problem
from medvl.jsonio import DataError, read_json
from medvl.schema import make_record

DATASET = "slake"
BOX_TOLERANCE = 1.0  # px: annotation tools round outward; beyond this a box does not belong to the image


def boxes_from_detection(items, size: tuple[int, int], where: str) -> tuple[list[dict], list[tuple[str, str]], int]:
    """(boxes kept, [(label, rejection reason)], number clipped) for one detection.json's content."""
    if not isinstance(items, list) or not all(isinstance(it, dict) for it in items):
        raise DataError(f"{where}: expected a list of {{label: [x, y, w, h]}} objects")
    w_img, h_img = size
    kept, rejected, clipped = [], [], 0
    for item in items:
        for label, xywh in item.items():
            if not (isinstance(xywh, list) and len(xywh) == 4 and all(isinstance(v, (int, float)) for v in xywh)):
                rejected.append((label, "box_not_4_numbers"))
                continue
            if not all(math.isfinite(v) for v in xywh):  # json reads NaN / Infinity; NaN passes every comparison
                rejected.append((label, "box_not_finite"))
                continue
            x, y, w, h = xywh
            if w <= 0 or h <= 0:
                rejected.append((label, "box_non_positive_size"))
                continue
            x1, y1, x2, y2 = x, y, x + w, y + h
            t = BOX_TOLERANCE
            if x1 < -t or y1 < -t or x2 > w_img + t or y2 > h_img + t:
                rejected.append((label, "box_outside_image"))
                continue
            xyxy = [max(0, x1), max(0, y1), min(w_img, x2), min(h_img, y2)]
            clipped += xyxy != [x1, y1, x2, y2]
            kept.append({"label": label, "xyxy": xyxy, "image_size": [w_img, h_img]})
    return kept, rejected, clipped


class _BoxCache:
    """Boxes per image folder, read once; the box accounting is per image, not per record."""

    def __init__(self):
        self.cache: dict[str, list[dict]] = {}
        self.stats = Counter()
        self.rejected: dict[str, list[str]] = defaultdict(list)

    def get(self, image_path: str) -> list[dict]:
        folder = os.path.dirname(image_path)
        if folder not in self.cache:
            self.cache[folder] = self._load(folder, image_path)
        return copy.deepcopy(self.cache[folder])  # records must not share (mutable) box lists

    def _load(self, folder: str, image_path: str) -> list[dict]:
        det = Path(folder) / "detection.json"
        if not det.exists():
            self.stats["images_without_detection_json"] += 1
            return []
        items = read_json(det)
        if not items:
            return []
        kept, rejected, clipped = boxes_from_detection(items, image_size(image_path), str(det))
        self.stats["images_with_boxes"] += bool(kept)
        self.stats["read"] += len(kept) + len(rejected)
        self.stats["kept"] += len(kept)
        self.stats["clipped"] += clipped
        for label, reason in rejected:
            self.rejected[reason].append(f"{Path(folder).name}:{label}")
        return kept

    def as_dict(self) -> dict:
        return {"boxes": dict(self.stats, rejected=dict(self.rejected))}


def convert(inputs, image_root, split: str | None = None, lang: str = "en",
            show_progress: bool = True, allow_outside_root: bool = False) -> tuple[list[dict], dict]:
    if lang not in ("en", "zh", "all"):
        raise DataError(f"unknown --lang {lang!r}: use en, zh or all")
    paths = expand_inputs(inputs, patterns=("*.json",))
    report = Report(DATASET, paths)
    images, ids, boxes = ImageResolver(image_root, allow_outside_root), IdRegistry(report), _BoxCache()
    records = []
    for path in paths:
        file_split = resolve_split(split, path)
        for i, row in enumerate(progress(read_json_list(path), f"slake {path.name}", enabled=show_progress)):
            report.read += 1
            rec = _convert_row(row, f"{path.name}#{i}", file_split, lang, images, ids, boxes, report)
            if rec is not None:
                records.append(rec)
                report.converted += 1
    report.extra.update(boxes.as_dict())
    return records, report.as_dict()


def _convert_row(row, where, split, lang, images, ids, boxes, report) -> dict | None:
    qid = report.row_qid(row, where)
    if qid is None:
        return None
    base_id = f"slake-{qid}"
    q_lang = str(row.get("q_lang", "")).strip().lower()
    if q_lang not in ("en", "zh"):
        report.reject(base_id, "unknown_q_lang", f"{where}: q_lang={row.get('q_lang')!r}")
        return None
    if lang != "all" and q_lang != lang:
        report.skipped[f"q_lang_{q_lang}"] += 1
        return None
    question, answer = clean_text(row.get("question")), clean_text(row.get("answer"))
    answer_type = str(row.get("answer_type", "")).strip().lower()
    problem = ("empty_question" if not question else "empty_answer" if not answer
               else "unknown_answer_type" if answer_type not in ("open", "closed")
               else "missing_img_name" if not row.get("img_name") else None)
    if problem:
        report.reject(base_id, problem, f"{where}: answer_type={row.get('answer_type')!r}")
        return None
    if (tag := reserved_tag_problem(question, answer)):
        report.reject(base_id, "reserved_tag_in_text", f"{where}: {tag}")
        return None
    image = images.path(str(row["img_name"]))
    if (why := images.problem(image)):
        report.reject(base_id, why, image)
        return None
    rid = ids.assign(base_id, (image, question, answer, q_lang))
    if rid is None:
        report.reject(base_id, "duplicate_row", where)
        return None
    location = row.get("location")
    meta = {"dataset": DATASET, "split": split, "answer_type": answer_type, "question_type": row.get("content_type"),
            "organ": str(location).lower() if location else None, "modality": row.get("modality"),
            "boxes": boxes.get(image), "content_type": row.get("content_type"), "base_type": row.get("base_type"),
            "location": location, "triple": row.get("triple"), "q_lang": q_lang, "qid": row.get("qid"),
            "img_id": row.get("img_id")}
    return make_record(rid, image, question, answer, meta)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", default="en", choices=["en", "zh", "all"], help="question language to keep (default en)")


def convert_from_args(args: argparse.Namespace):
    return convert(args.input, args.image_root, split=args.split, lang=args.lang, show_progress=not args.no_progress,
                   allow_outside_root=getattr(args, "allow_outside_root", False))


EPILOG = """examples:
  python -m data_process.slake --input Slake1.0/train.json Slake1.0/validate.json --image_root Slake1.0/imgs \\
      --out out/slake_trainval.json
  python -m data_process.slake --input Slake1.0/test.json --image_root Slake1.0/imgs --lang all --out out/slake_test.json"""


def main(argv=None) -> int:
    return module_main(DATASET, __doc__.split("\n\n")[0], EPILOG, add_arguments, convert_from_args, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
