"""Grounding SFT records from the boxes already in meta.boxes (SLAKE detection boxes, synthetic lesion boxes, ...).

Per image (records of the same image are grouped; their boxes are merged and deduplicated), two tasks:

  grounding              "Locate the liver."            -> the box(es) of that label   (meta.task = "grounding")
  region_classification  "What is in the region <region>?" -> "liver"                  (meta.task = "region_classification")

No box text is written here: a grounding answer is rendered from meta.boxes, and `<region>` is replaced by the box,
both in the model family's own format at encode time (medvl/encoding.py through medvl.families.box_to_text). So the
same file trains Qwen2-VL (0-1000 relative `<|box_start|>(x1,y1),(x2,y2)<|box_end|>`) and Qwen2.5-VL (JSON bbox_2d in
pixels of the resized input) correctly. Boxes stay in absolute pixels of the original image.

Labels are lower-cased and whitespace-collapsed ("Left Lung" -> "left lung"); all boxes of one label form one grounding
record. Question wording is drawn from a few templates per task, deterministically from (--seed, record id); the
template is kept in meta.template. Ids: `<image key>-ground-<k>` / `<image key>-region-<k>`, where the image key is
`<dataset>-img<meta.img_id>` when the source has an image id (SLAKE) and the first source record's id otherwise.

Accounting (OUT.report.json): every input record is used (it has boxes) or skipped with a reason (no_boxes,
multi_image, no_image); every box is kept or rejected with its reason (non_positive_size, outside_image,
not_4_numbers); an image whose records disagree on the split is rejected (its boxes would leak across splits).

    python -m data_process.grounding_sft --input data/slake_train.json --out data/slake_grounding_train.json
    python -m data_process.grounding_sft --input demo_out/data/train.json --out data/synth_grounding.json \\
        --tasks region_classification --seed 1
"""
from __future__ import annotations

import argparse
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

from data_process.conversion.cli import write_outputs
from data_process.conversion.report import Report, summary_text
from data_process.conversion.text import clean_text
from medvl.jsonio import DataError, read_records
from medvl.schema import REGION_TAG, image_list, make_record

TASKS = ("grounding", "region_classification")
TEMPLATES = {
    "grounding": ("Locate the {label}.", "Where is the {label}? Answer with its bounding box.",
                  "Find the {label} in the image."),
    "region_classification": (f"What is in the region {REGION_TAG}?", f"Which structure is inside {REGION_TAG}?",
                              f"What does the region {REGION_TAG} show?"),
}
CARRY_META = ("dataset", "modality", "organ", "location")  # image-level fields worth keeping from the source


def _box_problem(box) -> str | None:
    if not isinstance(box, dict) or not isinstance(box.get("xyxy"), list) or len(box["xyxy"]) != 4 \
            or not all(isinstance(v, (int, float)) for v in box["xyxy"]):
        return "not_4_numbers"
    x1, y1, x2, y2 = box["xyxy"]
    if x2 <= x1 or y2 <= y1:
        return "non_positive_size"
    size = box.get("image_size")
    if size and (x1 < 0 or y1 < 0 or x2 > size[0] or y2 > size[1]):
        return "outside_image"
    if not clean_text(box.get("label")):
        return "no_label"
    return None


def _image_key(rec: dict) -> str:
    meta = rec.get("meta") or {}
    if meta.get("img_id") not in (None, ""):
        return f"{meta.get('dataset') or 'img'}-img{meta['img_id']}"
    return str(rec["id"])


def _template(task: str, rid: str, seed: int) -> str:
    options = TEMPLATES[task]
    return options[random.Random(f"{seed}:{rid}").randrange(len(options))]


def build(records: list[dict], tasks=TASKS, seed: int = 0) -> tuple[list[dict], dict]:
    """(grounding SFT records, report) from records carrying meta.boxes."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise DataError(f"--tasks must be a non-empty subset of {list(TASKS)}, got {list(tasks)}")
    report = Report("grounding_sft")
    by_image: dict[str, list[dict]] = defaultdict(list)
    for i, rec in enumerate(records):
        report.read += 1
        if not isinstance(rec, dict) or "id" not in rec:
            report.reject(f"<record #{i}>", "malformed_record")
            continue
        imgs = image_list(rec)
        reason = "no_image" if not imgs else "multi_image" if len(imgs) > 1 else \
            "no_boxes" if not (rec.get("meta") or {}).get("boxes") else None
        if reason:
            report.skipped[reason] += 1
            continue
        by_image[imgs[0]].append(rec)
        report.converted += 1  # "converted" here: the record's boxes were used

    out: list[dict] = []
    boxes_stats, box_rejects = Counter(), defaultdict(list)
    per_task = Counter()
    for image, recs in by_image.items():
        key = _image_key(recs[0])
        splits = {(r.get("meta") or {}).get("split") for r in recs}
        if len(splits) > 1:
            box_rejects["image_in_several_splits"].append(f"{key} ({sorted(map(str, splits))})")
            continue
        src = recs[0].get("meta") or {}
        seen, boxes = set(), []
        for r in recs:
            for b in (r.get("meta") or {}).get("boxes") or []:
                ident = (str(b.get("label")), tuple(b.get("xyxy") or ())) if isinstance(b, dict) else ("?", ())
                if ident in seen:
                    continue
                seen.add(ident)
                boxes_stats["read"] += 1
                problem = _box_problem(b)
                if problem:
                    label = b.get("label") if isinstance(b, dict) else repr(b)
                    box_rejects[problem].append(f"{key}:{label}")
                    continue
                boxes_stats["kept"] += 1
                boxes.append({**b, "label": clean_text(b["label"]).lower(), "xyxy": list(b["xyxy"])})
        if not boxes:
            continue
        base_meta = {k: src.get(k) for k in CARRY_META if src.get(k) is not None}
        base_meta.update(split=src.get("split"), answer_type="open", source_ids=[str(r["id"]) for r in recs])
        if "grounding" in tasks:
            labels = list(dict.fromkeys(b["label"] for b in boxes))  # first-seen order
            for k, label in enumerate(labels):
                rid = f"{key}-ground-{k}"
                q = _template("grounding", rid, seed)
                target = [dict(b) for b in boxes if b["label"] == label]
                out.append(make_record(rid, image, q.format(label=label), label, dict(
                    base_meta, task="grounding", question_type="grounding", boxes=target, template=q)))
                per_task["grounding"] += 1
        if "region_classification" in tasks:
            for k, b in enumerate(boxes):
                rid = f"{key}-region-{k}"
                q = _template("region_classification", rid, seed)
                out.append(make_record(rid, image, q, b["label"], dict(
                    base_meta, task="region_classification", question_type="region_classification",
                    boxes=[dict(b)], template=q)))
                per_task["region_classification"] += 1
    report.extra.update(images=len(by_image), boxes=dict(boxes_stats, rejected=dict(box_rejects)),
                        records_out=dict(per_task), tasks=list(tasks), seed=seed)
    return out, report.as_dict()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_process.grounding_sft", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", required=True, help="records (.json/.jsonl) with meta.boxes")
    p.add_argument("--out", required=True, help="output records (.json or .jsonl); report at OUT.report.json")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma list of {', '.join(TASKS)} (default both)")
    p.add_argument("--seed", type=int, default=0, help="question-template choice (default 0)")
    a = p.parse_args(argv)
    try:
        records = [r for path in a.input for r in read_records(path)]
        out, report = build(records, [t.strip() for t in a.tasks.split(",") if t.strip()], a.seed)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report["inputs"] = [str(Path(x).resolve()) for x in a.input]
    rp = write_outputs(out, report, a.out)
    print(summary_text(report))
    print(f"wrote {len(out)} records ({report['records_out']}) to {a.out}; report {rp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
