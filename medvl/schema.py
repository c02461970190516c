"""The one record schema (LLaVA-style) every converter emits and every stage reads.

{"id": "vqarad-0", "image": "path.jpg" | ["a.jpg", "b.jpg"] | absent (text-only),
 "conversations": [{"from": "human", "value": "<image>\\nIs there a fracture?"}, {"from": "gpt", "value": "yes"}],
 "meta": {"dataset": "vqa_rad", "split": "test", "answer_type": "closed"|"open", "question_type": "...",
          "organ": "...", "modality": "...", "boxes": [{"label": "liver", "xyxy": [x1, y1, x2, y2], "image_size": [w, h]}]}}

Boxes are absolute pixels of the original image; each model family's box text is made at collate time (medvl/families.py).
A `<region>` tag in a turn stands for the next box of meta.boxes (k-th tag -> boxes[k]; when a record has tags, their
count equals the number of boxes). It is rendered in the family's format at encode time: in a question as the bare box
("What is in <region>?"), in an answer with its label (a grounded caption).
"""
from __future__ import annotations

import re

from typing import Any

IMAGE_TAG = "<image>"
REGION_TAG = "<region>"  # a box of meta.boxes, written in the model family's format at encode time
ROLES = ("human", "gpt")


def make_record(rid: str, image: str | list[str] | None, question: str, answer: str, meta: dict[str, Any],
                add_image_tag: bool = True) -> dict:
    """A single-turn record; the `<image>` tag leads the question unless the question already holds one."""
    q = question.strip()
    if image is not None and add_image_tag and IMAGE_TAG not in q:
        n = len(image) if isinstance(image, list) else 1
        q = (IMAGE_TAG + "\n") * n + q
    rec = {"id": rid}
    if image is not None:
        rec["image"] = image
    rec["conversations"] = [{"from": "human", "value": q}, {"from": "gpt", "value": str(answer).strip()}]
    rec["meta"] = meta
    return rec


def image_list(rec: dict) -> list[str]:
    img = rec.get("image")
    if img is None:
        return []
    return list(img) if isinstance(img, list) else [img]


def record_problems(rec: Any) -> list[str]:
    """Structural problems of a record (empty list = well-formed). Content checks (images, lengths) live in validate.py."""
    if not isinstance(rec, dict):
        return [f"record is a {type(rec).__name__}, not an object"]
    out = []
    if not isinstance(rec.get("id"), (str, int)) or str(rec.get("id")).strip() == "":
        out.append("missing or empty 'id'")
    img = rec.get("image")
    if img is not None and not (isinstance(img, str) or (isinstance(img, list) and all(isinstance(i, str) for i in img))):
        out.append("'image' must be a path or a list of paths")
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv:
        return out + ["missing or empty 'conversations'"]
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
            out.append(f"turn {i} must be {{'from': 'human'|'gpt', 'value': str}}")
            continue
        if turn["from"] != ROLES[i % 2]:
            out.append(f"turn {i} is from {turn['from']!r}: turns must alternate human, gpt")
        if turn["from"] == "gpt" and not turn["value"].strip():
            out.append(f"turn {i}: empty answer")
    if conv and isinstance(conv[-1], dict) and conv[-1].get("from") != "gpt":
        out.append("last turn must be the answer (from 'gpt')")
    n_tags = sum(t.get("value", "").count(IMAGE_TAG) for t in conv if isinstance(t, dict) and isinstance(t.get("value"), str))
    if n_tags != len(image_list(rec)):
        out.append(f"{n_tags} '<image>' tags for {len(image_list(rec))} images")
    meta = rec.get("meta", {})
    if not isinstance(meta, dict):
        out.append("'meta' must be an object")
    else:
        for j, b in enumerate(meta.get("boxes") or []):
            xyxy = b.get("xyxy") if isinstance(b, dict) else None
            if not (isinstance(xyxy, list) and len(xyxy) == 4 and all(isinstance(v, (int, float)) for v in xyxy)):
                out.append(f"box {j}: 'xyxy' must be 4 numbers")
                continue
            x1, y1, x2, y2 = xyxy
            if x2 <= x1 or y2 <= y1:
                out.append(f"box {j}: non-positive size {xyxy}")
            size = b.get("image_size")
            if size and (x1 < 0 or y1 < 0 or x2 > size[0] or y2 > size[1]):
                out.append(f"box {j}: {xyxy} lies outside the image {size}")
        n_regions = sum(t.get("value", "").count(REGION_TAG) for t in conv
                        if isinstance(t, dict) and isinstance(t.get("value"), str))
        if n_regions and n_regions != len(meta.get("boxes") or []):
            out.append(f"{n_regions} '{REGION_TAG}' tags for {len(meta.get('boxes') or [])} boxes in meta.boxes")
    return out


def strip_image_tags(text: str) -> tuple[str, int]:
    """The text without its image tags (each becomes a line break), and how many there were."""
    n = text.count(IMAGE_TAG)
    return (re.sub(rf"\s*{re.escape(IMAGE_TAG)}\s*", "\n", text).strip() if n else text), n
