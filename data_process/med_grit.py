"""Med-GRIT-270K (BiRD, Huang et al. MICCAI 2024) style refer-and-ground records -> records with boxes in pixels.

What we rely on (the QA files are released on request only, so this is read from the paper and the public BiRD
repository's inference/evaluation scripts; assumptions are marked):
- A file is a JSON list of items `{"id": ..., "conversations": [[question, answer], ...]}`; the image is `<id>.png`
  under the image root (SA-Med2D images), or the item's `image` field when it has one. Conversations given
  LLaVA-style (`[{"from": "human", ...}, {"from": "gpt", ...}]`) are accepted too. The question may carry
  `<img>...</img>`; it is dropped (the record's `<image>` tag takes its place).
- Boxes are written in the text in Qwen-VL (v1) style, `<ref>phrase</ref><box>(x1,y1),(x2,y2)</box>`, with integer
  coordinates normalised to 0-1000 of the image width/height. ASSUMPTION: the form `{<x1><y1><x2><y2>}` (same 0-1000
  scale) is accepted as well, and a coordinate v maps to v / 1000 * side pixels.
- The four BiRD tasks are named in the file names (`..._VG_...`, `..._RO_...`, `..._GC_...`, `..._MII_...`):
    VG   visual grounding / referring expression comprehension: "where is the liver?" -> box(es)
    RO   referring object classification: "what is in <box>?" -> a label
    GC   grounded captioning: a region (or the image) -> a description, boxes possibly inline in it
    MII  medical image analysis: ordinary VQA, no boxes
  With no task in the file name (or --task auto) the task of each QA pair is read from where its boxes are:
  only boxes in the answer -> VG; a box in the question and a short answer (<= 3 words) -> RO; a box in the question
  and a longer answer, or boxes inside a text answer -> GC; no box -> MII. ASSUMPTION: the id's first
  `_`-separated token names the modality (ct, mr, x, pet, endoscopy, dermoscopy, fundus, ultrasound), as BiRD's
  evaluation scripts read it.

Output (one record per QA pair; ASSUMPTION: a multi-turn item is split into single-turn records `-t0`, `-t1`, ...,
so a follow-up question loses the earlier turns): boxes go to meta.boxes in absolute pixels of the image
(`image_size` read from the file), and the text keeps only tags, so each model family writes them in its own format
at encode time:
    VG  -> meta.task "grounding", answer = the label(s); meta.boxes = the answer's boxes (rendered as the answer)
    RO  -> meta.task "region_classification", the question's box becomes `<region>`
    GC  -> meta.task "region_caption", every box becomes `<region>` (bare in the question, labelled in the answer)
    MII -> meta.task "vqa"
A pair is rejected (reason + id in the report) for a missing or unreadable image (or one outside --image_root, unless
--allow_outside_root), an empty question/answer, a box coordinate outside 0-1000, a box with x2 <= x1 or y2 <= y1,
or a VG answer without a box.

    python -m data_process.med_grit --input Med-GRIT/test_VG.json --image_root SA-Med2D/images --out medgrit_vg.json
"""
from __future__ import annotations

import argparse
import re

from data_process.conversion.cli import module_main
from data_process.conversion.ids import IdRegistry
from data_process.conversion.image_paths import ImageResolver, image_size
from data_process.conversion.inputs import expand_inputs, progress, read_json_list
from data_process.conversion.report import Report
from data_process.conversion.splits import resolve_split
from data_process.conversion.text import clean_text
from medvl.answers import infer_answer_type
from medvl.schema import REGION_TAG, make_record

DATASET = "med_grit"
SCALE = 1000
TASKS = {"VG": "grounding", "RO": "region_classification", "GC": "region_caption", "MII": "vqa"}
MODALITIES = {"ct": "CT", "mr": "MRI", "x": "X-ray", "pet": "PET", "endoscopy": "endoscopy",
              "dermoscopy": "dermoscopy", "fundus": "fundus", "ultrasound": "ultrasound"}
_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
# <ref>phrase</ref> optionally before <box>(x1,y1),(x2,y2)</box>, or the brace form {<x1><y1><x2><y2>}
_BOX = re.compile(r"(?:<ref>(?P<ref>.*?)</ref>\s*)?<box>\s*\(" + _NUM + "," + _NUM + r"\)\s*,\s*\(" + _NUM + "," + _NUM
                  + r"\)\s*</box>|\{\s*<" + _NUM + r">\s*<" + _NUM + r">\s*<" + _NUM + r">\s*<" + _NUM + r">\s*\}")
_REF_ONLY = re.compile(r"<ref>(.*?)</ref>")
_IMG = re.compile(r"<img>.*?</img>", re.S)
SHORT_ANSWER_WORDS = 3


class RowError(ValueError):
    """A QA pair that cannot be converted; str(e) is the report's reason."""


def task_from_name(name: str) -> str | None:
    found = {TASKS[t] for t in re.split(r"[^A-Za-z]+", name) if t in TASKS}
    return found.pop() if len(found) == 1 else None


def extract_boxes(text: str, size: tuple[int, int], in_question: bool) -> tuple[str, list[dict]]:
    """(text with each box replaced by `<region>`, boxes in pixels). A phrase in <ref> stays in a question's text
    (the region is drawn bare there) and becomes the box label in an answer (the label is drawn with the box)."""
    w, h = size
    boxes: list[dict] = []

    def repl(m: re.Match) -> str:
        nums = [g for g in m.groups()[1:] if g is not None]
        coords = [float(v) for v in nums]
        if any(v < 0 or v > SCALE for v in coords):
            raise RowError("box_coordinate_outside_0_1000")
        x1, y1, x2, y2 = coords
        if x2 <= x1 or y2 <= y1:
            raise RowError("degenerate_box")
        xyxy = [round(x1 / SCALE * w, 2), round(y1 / SCALE * h, 2), round(x2 / SCALE * w, 2), round(y2 / SCALE * h, 2)]
        label = clean_text(m.group("ref")) or None
        boxes.append({"label": label, "xyxy": xyxy, "image_size": [w, h]})
        return f"{label} {REGION_TAG}" if (label and in_question) else REGION_TAG

    out = _BOX.sub(repl, text)
    return _REF_ONLY.sub(lambda m: m.group(1), out), boxes  # a <ref> without a box is plain text


def infer_task(q_boxes: list, a_boxes: list, answer_rest: str, answer: str) -> str:
    if a_boxes and not answer_rest:
        return "grounding"
    if a_boxes:
        return "region_caption"
    if q_boxes:
        return "region_classification" if len(answer.split()) <= SHORT_ANSWER_WORDS else "region_caption"
    return "vqa"


def _pairs(item) -> list[tuple[str, str]]:
    conv = item.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise RowError("no_conversations")
    if all(isinstance(t, (list, tuple)) and len(t) == 2 for t in conv):
        return [(str(q), str(a)) for q, a in conv]
    if all(isinstance(t, dict) for t in conv):
        roles = [t.get("from") for t in conv]
        if len(conv) % 2 == 0 and roles == ["human", "gpt"] * (len(conv) // 2):
            return [(str(conv[i].get("value", "")), str(conv[i + 1].get("value", ""))) for i in range(0, len(conv), 2)]
    raise RowError("unrecognised_conversations")


def convert(inputs, image_root, split: str | None = None, task: str = "auto", show_progress: bool = True,
            allow_outside_root: bool = False) -> tuple[list[dict], dict]:
    paths = expand_inputs(inputs, patterns=("*.json",))
    report = Report(DATASET, paths)
    images, ids = ImageResolver(image_root, allow_outside_root), IdRegistry(report)
    records = []
    for path in paths:
        file_split = resolve_split(split, path)
        file_task = TASKS[task.upper()] if task != "auto" else task_from_name(path.stem)
        for i, item in enumerate(progress(read_json_list(path), f"med_grit {path.name}", enabled=show_progress)):
            where = f"{path.name}#{i}"
            if not isinstance(item, dict) or not str(item.get("id", "")).strip():
                report.read += 1
                report.reject(where, "item_without_id" if isinstance(item, dict) else "row_not_an_object")
                continue
            item_id = str(item["id"]).strip()
            try:
                pairs = _pairs(item)
            except RowError as e:
                report.read += 1
                report.reject(f"medgrit-{item_id}", str(e), where)
                continue
            image = images.path(str(item.get("image") or f"{item_id}.png"))
            image_problem, size = images.problem(image), None
            if image_problem is None:
                try:
                    size = image_size(image)
                except (OSError, ValueError):  # PIL cannot identify / open it
                    image_problem = "unreadable_image"
            for k, (q_raw, a_raw) in enumerate(pairs):
                report.read += 1
                base = f"medgrit-{item_id}" + (f"-t{k}" if len(pairs) > 1 else "")
                try:
                    if image_problem:
                        raise RowError(image_problem)
                    rec = _convert_pair(base, item_id, q_raw, a_raw, image, size, file_split, file_task, where, ids)
                except RowError as e:
                    report.reject(base, str(e), f"{where} turn {k}")
                    continue
                records.append(rec)
                report.converted += 1
    return records, report.as_dict()


def _convert_pair(base, item_id, q_raw, a_raw, image, size, split, file_task, where, ids) -> dict:
    question = clean_text(_IMG.sub(" ", q_raw).replace("<image>", " "))
    answer = clean_text(a_raw)
    if not question or not answer:
        raise RowError("empty_question" if not question else "empty_answer")
    question, q_boxes = extract_boxes(question, size, in_question=True)
    answer, a_boxes = extract_boxes(answer, size, in_question=False)
    answer_rest = clean_text(answer.replace(REGION_TAG, " ").strip(" .,;:"))
    task = file_task or infer_task(q_boxes, a_boxes, answer_rest, answer)
    if task == "grounding":
        if not a_boxes:
            raise RowError("grounding_answer_without_box")
        if q_boxes:  # a grounding record draws only its answer boxes; a region in the question has no slot
            raise RowError("grounding_question_with_box")
        labels = list(dict.fromkeys(b["label"] for b in a_boxes if b["label"]))
        answer = ", ".join(labels) or "region"
        boxes = a_boxes
    else:
        boxes = q_boxes + a_boxes
    rid = ids.assign(base, (image, question, answer, str(boxes)))
    if rid is None:
        raise RowError("duplicate_row")
    if task == "region_classification":
        for b in q_boxes:  # the label the region holds; drawn only in answers, kept for filtering and analysis
            b["label"] = b["label"] or answer
    meta = {"dataset": DATASET, "split": split, "task": task,
            "answer_type": "open" if task != "vqa" else infer_answer_type(question, answer),
            "question_type": {v: k for k, v in TASKS.items()}[task], "boxes": boxes,
            "modality": MODALITIES.get(item_id.split("_")[0].lower()), "source_id": item_id}
    return make_record(rid, image, question, answer, meta)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="auto", choices=["auto", *TASKS],
                   help="BiRD task of every pair (default: from the file name, else inferred per pair)")


def convert_from_args(args: argparse.Namespace):
    return convert(args.input, args.image_root, split=args.split, task=args.task, show_progress=not args.no_progress,
                   allow_outside_root=getattr(args, "allow_outside_root", False))


EPILOG = """examples:
  python -m data_process.med_grit --input Med-GRIT/train.json --image_root SA-Med2D/images --out out/medgrit_train.json
  python -m data_process.med_grit --input Med-GRIT/test_RO.json --image_root SA-Med2D/images --out out/medgrit_ro.json"""


def main(argv=None) -> int:
    return module_main(DATASET, __doc__.split("\n\n")[0], EPILOG, add_arguments, convert_from_args, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
