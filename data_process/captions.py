"""Stage-1 caption records from a VQA dataset's own records: one per image, WEAK, TEMPLATED captions.

These captions are composed from what the records already say, not written by anyone who looked at the image, so
they are short and repetitive. Where it is available, the LLaVA-Med alignment set (`python -m data_process.llava_med
--kind alignment`, real figure captions) is the better Stage-1 data; these are for training Stage 1 on VQA-RAD or
SLAKE alone.

One record per image (shape of data_process/synth_records.py's Stage-1 captions): a description request chosen
deterministically from a few fixed prompts ("Describe the image.", ...) answered by:
  "<modality> image of the <organ>, <plane>. <statements>"   e.g. "CT image of the chest, axial plane. There is no
  pneumothorax. There is a mass in the right lung."
- modality / organ: meta.modality and meta.organ where the dataset keeps them (SLAKE: both; VQA-RAD: organ only),
  the most common value over the image's records. Without meta.modality (VQA-RAD), and for the plane, an open
  answer to a modality / plane question is used only when it names one of a few known values (CT, MRI, X-ray,
  ultrasound; axial, coronal, sagittal, PA, AP, lateral), and so does a "yes" to "Is this a(n) <that value>
  (scan|image|film)?"; the question must have no negation and the image's answers must agree; anything else is
  left out.
- statements: only yes/no answers (medvl.answers.yes_no) to questions of the forms "Is there X?", "Are there X?",
  "Does the image/picture contain|show X?", turned into "There is (no) X." etc. Questions with "or", a negation,
  or X starting with any/anything/something/more/less/only are left out; a question answered both yes and no for one
  image gives no statement. Everything else (open answers, other yes/no questions) is left out: rephrasing it safely
  needs understanding the question.
- Records of the test split are refused (meta.split "test": 202 of VQA-RAD's 203 test images are train images too,
  so test answers would leak into Stage 1) unless --include_test. Run it on the train side of data_process.split,
  so that val images stay unseen as well.
- Text-only and multi-image records are skipped (counted); an image with nothing to say is skipped (counted).
- Ids: `<dataset>-cap-<shortest unique tail of the image path>` (SLAKE: slake-cap-xmlab1-source). meta: dataset,
  split, task "caption", answer_type "open", question_type "caption" (as data_process.llava_med --kind alignment),
  organ, modality, plane, source_ids (the records the caption was made from), caption_source "templated".
Every record is checked with medvl.schema.record_problems before it is written (atomically, .json or .jsonl).

examples:
  python -m data_process.captions --input data/train.json --out data/captions.json
  python -m data_process.captions --input data/train.json data/slake_train.json --out data/captions.json
  python -m data_process.captions --input data/vqa_rad_train.json --out data/captions.jsonl   # all train images
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections import Counter
from pathlib import PurePath

from medvl.answers import normalize_answer, yes_no
from data_process.split import check_records as check_split_input
from medvl.jsonio import DataError, read_records, write_records
from medvl.schema import IMAGE_TAG, image_list, make_record, record_problems, strip_image_tags

PROMPTS = ("Describe the image.", "Describe this medical image.", "What does this image show?",
           "Give a short description of the image.", "Summarize what is shown in this image.")

# open answers that name a modality / plane (normalize_answer form); anything else is not used
_MODALITY_FIRST_WORD = {"ct": "CT", "mri": "MRI", "mr": "MRI", "ultrasound": "ultrasound"}
_XRAY = {"x ray", "xray", "cxr", "chest x ray", "chest xray", "radiograph", "plain film", "x ray plain film",
         "xray plain film", "plain radiograph"}
_PLANES = {"axial": "axial plane", "axial plane": "axial plane", "transverse": "axial plane",
           "transverse plane": "axial plane", "coronal": "coronal plane", "coronal plane": "coronal plane",
           "sagittal": "sagittal plane", "sagittal plane": "sagittal plane", "saggital": "sagittal plane",
           "pa": "PA view", "posteroanterior": "PA view", "pa view": "PA view", "ap": "AP view",
           "anteroposterior": "AP view", "ap view": "AP view", "lateral": "lateral view", "lateral view": "lateral view"}

# (question pattern, statement if yes, statement if no); group 1 is X
_STATEMENTS = [
    (re.compile(r"^is there (.+)$", re.I), "There is {x}.", "There is no {y}."),
    (re.compile(r"^are there (.+)$", re.I), "There are {x}.", "There are no {y}."),
    (re.compile(r"^does (?:the|this) (?:image|picture) contain (.+)$", re.I), "The image contains {x}.",
     "The image does not contain {x}."),
    (re.compile(r"^does (?:the|this) (?:image|picture) show (.+)$", re.I), "The image shows {x}.",
     "The image does not show {x}."),
]
_UNSAFE_X = re.compile(r"^(any|anything|something|more|less|only)\b|\b(or|not|no|never|nor|without)\b|n't", re.I)
_NEGATION = re.compile(r"\b(not|never|no)\b|n't", re.I)
_IS_THIS = re.compile(r"^is (?:this|the) (?:image )?(?:an? )?(.+?)(?: scan| image| film)?$", re.I)
_ARTICLE = re.compile(r"^(a|an|the)\s+", re.I)


def _question(rec: dict) -> str:
    return strip_image_tags(rec["conversations"][0]["value"])[0].strip()


def _answer(rec: dict) -> str:
    return rec["conversations"][-1]["value"].strip()


def statement(question: str, answer: str) -> tuple[str, str] | None:
    """(key, statement) for a safe yes/no question, else None. The key is the same for a yes and a no answer."""
    if yes_no(answer) is None:
        return None
    q = re.sub(r"\s+", " ", question).strip().rstrip("?.! ").strip()
    for pattern, yes_text, no_text in _STATEMENTS:
        m = pattern.match(q)
        if not m:
            continue
        x = m.group(1).strip()
        if not x or _UNSAFE_X.search(x):
            return None
        text = (yes_text if yes_no(answer) == "yes" else no_text).format(x=x, y=_ARTICLE.sub("", x))
        return f"{pattern.pattern}|{normalize_answer(x)}", text
    return None


def _qtypes(rec: dict) -> set[str]:
    return {t.strip().upper() for t in str((rec.get("meta") or {}).get("question_type") or "").split(",")}


def _named_value(rec: dict, kind: str) -> str | None:
    """The modality / plane an open answer names, when the question is of that type and has no negation."""
    meta = rec.get("meta") or {}
    if kind.upper() not in _qtypes(rec) or _NEGATION.search(_question(rec)):
        return None
    a = normalize_answer(_answer(rec))
    if str(meta.get("answer_type", "")).lower() != "open":
        # "Is this a CT scan?" -> yes names the modality; a "no" says nothing about what it is
        m = _IS_THIS.match(re.sub(r"\s+", " ", _question(rec)).strip().rstrip("?.! "))
        if not m or yes_no(_answer(rec)) != "yes":
            return None
        a = normalize_answer(m.group(1))
    if kind == "modality":
        if a in _XRAY or a.startswith("x ray ") or a.startswith("xray "):
            return "X-ray"
        return _MODALITY_FIRST_WORD.get(a.split(" ")[0]) if a else None
    return _PLANES.get(a)


def _most_common(values) -> str | None:
    counts = Counter(v for v in values if v)
    return min(counts, key=lambda v: (-counts[v], v)) if counts else None


def _agreed(values) -> str | None:
    found = {v for v in values if v}
    return found.pop() if len(found) == 1 else None


def _tails(images: list[str]) -> dict[str, str]:
    """The shortest path tail (same depth for all) that tells the images apart: synpic1234, xmlab1-source."""
    parts = {img: PurePath(img).parts for img in images}
    depth = max((len(p) for p in parts.values()), default=1)
    for k in range(1, depth + 1):
        tails = {img: "-".join([*p[-k:-1], PurePath(p[-1]).stem]) for img, p in parts.items()}
        if len(set(tails.values())) == len(tails):
            return tails
    return {img: "-".join(p).replace("/", "") for img, p in parts.items()}  # only the suffix differs


def caption_text(organ: str | None, modality: str | None, plane: str | None, statements: list[str]) -> str:
    head = ""
    if modality or organ or plane:
        head = f"{modality} image" if modality else "Image"
        head += f" of the {organ}" if organ else ""
        head += f", {plane}" if plane else ""
        head += "."
    return " ".join([head, *statements]).strip()


def check_records(records: list, path: str, include_test: bool = False) -> None:
    """DataError naming the first malformed record, or (unless include_test) the first test-split record (repeated
    ids are the converters' concern here: captions are per image)."""
    check_split_input(records, path, include_test, unique_ids=False,
                      test_hint="caption training data only (the train side of data_process.split)")


def build_captions(records: list[dict], path: str = "input", include_test: bool = False,
                   checked: bool = False) -> tuple[list[dict], dict]:
    """(caption records, counts). Refuses (DataError naming the record) malformed input and test-split records."""
    if not checked:
        check_records(records, path, include_test)
    by_image: dict[str, list[dict]] = {}
    stats = Counter()
    for rec in records:
        images = image_list(rec)
        if len(images) != 1:
            stats["skipped_text_only" if not images else "skipped_multi_image"] += 1
            continue
        by_image.setdefault(images[0], []).append(rec)
    tails = _tails(list(by_image))
    out = []
    for image, recs in by_image.items():
        metas = [r.get("meta") or {} for r in recs]
        organ = _most_common(str(m.get("organ")).replace("_", " ") for m in metas if m.get("organ"))
        modality = (_most_common(str(m.get("modality")) for m in metas if m.get("modality"))
                    or _agreed(_named_value(r, "modality") for r in recs))
        plane = _agreed(_named_value(r, "plane") for r in recs)
        found: dict[str, set[str]] = {}
        for r in recs:
            if (st := statement(_question(r), _answer(r))):
                found.setdefault(st[0], set()).add(st[1])
                stats["yes_no_used"] += 1
        statements = [next(iter(v)) for v in found.values() if len(v) == 1]  # yes and no for one question: neither
        stats["statements_conflicting"] += sum(len(v) > 1 for v in found.values())
        text = caption_text(organ, modality, plane, statements)
        if not text:
            stats["skipped_no_facts"] += 1
            continue
        dataset = _most_common(str(m.get("dataset")) for m in metas if m.get("dataset")) or "records"
        rid = f"{dataset}-cap-{tails[image]}"
        prompt = PROMPTS[int(hashlib.sha256(rid.encode()).hexdigest(), 16) % len(PROMPTS)]
        meta = {"dataset": dataset, "split": _most_common(str(m.get("split")) for m in metas if m.get("split")),
                "task": "caption", "answer_type": "open", "question_type": "caption", "organ": organ,
                "modality": modality, "plane": plane, "boxes": [], "source_ids": [r["id"] for r in recs],
                "caption_source": "templated"}
        rec = make_record(rid, image, prompt, text, meta)
        problems = record_problems(rec)
        assert not problems and rec["conversations"][0]["value"].count(IMAGE_TAG) == 1, (rid, problems)
        out.append(rec)
    stats["images"] = len(by_image)
    stats["captions"] = len(out)
    return out, dict(stats)


def summary_line(n_records: int, s: dict) -> str:
    skipped = ", ".join(f"{k.removeprefix('skipped_')}: {v}" for k, v in sorted(s.items()) if k.startswith("skipped_"))
    return (f"{s['captions']} caption records for {s['images']} images from {n_records} records "
            f"({s.get('yes_no_used', 0)} yes/no answers as statements; skipped: {skipped or 'none'})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_process.captions", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="converted records (.json list or .jsonl), e.g. the train side of data_process.split")
    p.add_argument("--out", required=True, metavar="OUT", help="caption records (.json list or .jsonl)")
    p.add_argument("--include_test", action="store_true",
                   help="accept records whose meta.split is 'test' (refused by default: it leaks test answers)")
    a = p.parse_args(argv)
    try:
        records = []
        for path in a.input:  # checked one file at a time, so an error names its file
            recs = read_records(path)
            check_records(recs, path, a.include_test)
            records.extend(recs)
        caps, stats = build_captions(records, checked=True)
        if not caps:
            raise DataError(f"{', '.join(a.input)}: no image with anything to caption (no organ / modality / "
                            f"plane meta and no usable yes/no answers)")
        write_records(a.out, caps)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_line(len(records), stats) + f" -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
