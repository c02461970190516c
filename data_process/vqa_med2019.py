"""ImageCLEF VQA-Med 2019 (Ben Abacha et al.) -> records.

Line formats (UTF-8 text, one QA pair per line, `|`-separated):
- 4 columns `img_id|category|question|answer`: the test file `VQAMed2019_Test_Questions_w_Ref_Answers.txt`.
- 3 columns `img_id|question|answer`: training/validation files. The category comes from the file name
  (`QAPairsByCategory/C1_Modality_train.txt` ... `C4_Abnormality_train.txt`); `All_QA_Pairs_train.txt` names none, so its
  rows get category None (counted in notes) — prefer the per-category files.
Categories: modality, plane, organ, abnormality (an unknown one rejects the row). Images: `<image_root>/<img_id>.jpg`
(`Train_images/`, `Val_images/`, `VQAMed2019_Test_Images/`).

A line with another number of columns raises DataError naming the file and line number: a stray `|` shifts every
column, so the line cannot be read safely (the released files have none). Empty lines are ignored.
A folder given as --input stands for its *.txt files; those the converter cannot use (a 2-column `img_id|question` file
of test questions without answers, any other text file) are named and skipped, listed in the report's
`skipped_files` with the reason. Such a file passed by name is an error saying which file to pass instead.

Reference answers of the test set may list alternatives with `#` and optional words in `( )`: the answer turn is the
first alternative with the brackets removed, `meta.answers` holds every accepted form (each alternative with and without
its optional part), `meta.answer_raw` the released text.
answer_type: closed when the answer is yes/no or one of the options the question offers ("t1, t2, or flair?").
Ids: `vqamed2019-<split>-<img_id>-<category>` (or `-L<line>` without a category).

    python -m data_process.vqa_med2019 --input QAPairsByCategory/*_train.txt --image_root Train_images --out vqamed_train.json
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from data_process.conversion.cli import module_main
from data_process.conversion.ids import IdRegistry
from data_process.conversion.image_paths import ImageResolver
from data_process.conversion.inputs import expand_inputs, progress
from data_process.conversion.report import Report
from data_process.conversion.splits import resolve_split
from data_process.conversion.text import clean_text, reserved_tag_problem
from medvl.answers import infer_answer_type
from medvl.jsonio import DataError
from medvl.schema import make_record

DATASET = "vqa_med2019"
CATEGORIES = ("modality", "plane", "organ", "abnormality")
_CATEGORY_ALIASES = {"organ system": "organ", "organ_system": "organ", "organsystem": "organ", "abnormal": "abnormality"}


def category_from_name(path: str | Path) -> str | None:
    """`C1_Modality_train.txt` -> modality; None when the name states no single category."""
    tokens = set(re.split(r"[^a-z]+", Path(path).name.lower()))
    found = [c for c in CATEGORIES if c in tokens]
    return found[0] if len(found) == 1 else None


def parse_answer(raw: str) -> tuple[str, list[str]]:
    """(answer turn, accepted answers) from `a#b` alternatives and `(optional)` parts."""
    alts = [a.strip() for a in raw.split("#") if a.strip()]
    accepted: list[str] = []
    for a in alts:
        for form in (re.sub(r"[()]", "", a), re.sub(r"\([^)]*\)", "", a)):
            form = clean_text(form)
            if form and form not in accepted:
                accepted.append(form)
    return (accepted[0] if accepted else ""), accepted


def read_lines(path: Path) -> list[tuple[int, list[str]]]:
    """[(line number, columns)] of the non-empty lines; a wrong column count -> DataError naming file and line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e})") from None
    out, width = [], None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("|")
        width = width or len(cols)
        if width == 2:
            raise DataError(f"{path}: line {lineno} has 2 '|'-separated columns, {_QUESTIONS_ONLY}; pass VQAMed2019_Test_Questions_w_Ref_Answers.txt "
                            f"(img_id|category|question|answer) or the *_train.txt / *_val.txt QA pairs instead")
        if len(cols) not in (3, 4) or len(cols) != width:
            raise DataError(f"{path}: line {lineno} has {len(cols)} '|'-separated columns, expected "
                            f"{width if width in (3, 4) else '3 (img_id|question|answer) or 4 (img_id|category|question|answer)'}: {line[:120]!r}")
        out.append((lineno, cols))
    return out


_QUESTIONS_ONLY = "questions without reference answers (img_id|question)"


def unusable_reason(path: Path) -> str | None:
    """Why a .txt file found in an input folder is no QA-pairs file (judged by its first line), None if it is one."""
    try:
        first = next((line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()), None)
    except UnicodeDecodeError:
        return "not UTF-8 text"
    if first is None:
        return "empty file"
    n = len(first.split("|"))
    return _QUESTIONS_ONLY if n == 2 else None if n in (3, 4) else f"not a QA-pairs file (line 1 has {n} columns)"


def _usable_inputs(inputs) -> tuple[list[Path], dict[str, str]]:
    """(files to convert, {skipped file: reason}): a folder's unusable files are skipped, named files never."""
    paths, skipped = [], {}
    for given in [inputs] if isinstance(inputs, (str, Path)) else inputs:
        found = expand_inputs(given, patterns=("*.txt",))
        if not Path(given).is_dir():
            paths += found
            continue
        reasons = {f: unusable_reason(f) for f in found}
        if all(reasons.values()):
            raise DataError(f"{given}: no QA-pairs file here (" + "; ".join(f"{f.name}: {w}" for f, w in reasons.items())
                            + ")")
        paths += [f for f, why in reasons.items() if not why]
        skipped.update({str(f): why for f, why in reasons.items() if why})
    return paths, skipped


def convert(inputs, image_root, split: str | None = None, show_progress: bool = True,
            allow_outside_root: bool = False) -> tuple[list[dict], dict]:
    paths, skipped_files = _usable_inputs(inputs)
    report = Report(DATASET, paths)
    report.extra["skipped_files"] = skipped_files
    images, ids = ImageResolver(image_root, allow_outside_root), IdRegistry(report)
    records = []
    for path in paths:
        file_split, file_category = resolve_split(split, path), category_from_name(path)
        for lineno, cols in progress(read_lines(path), f"vqa_med2019 {path.name}", enabled=show_progress):
            report.read += 1
            rec = _convert_line(cols, path, lineno, file_split, file_category, images, ids, report)
            if rec is not None:
                records.append(rec)
                report.converted += 1
    return records, report.as_dict()


def _convert_line(cols, path, lineno, split, file_category, images, ids, report) -> dict | None:
    where = f"{path.name}:{lineno}"
    if len(cols) == 4:
        img_id, raw_cat, question, raw_answer = cols
        cat = raw_cat.strip().lower()
        category = _CATEGORY_ALIASES.get(cat, cat)
    else:
        (img_id, question, raw_answer), raw_cat, category = cols, None, file_category
    img_id, question = img_id.strip(), clean_text(question)
    answer, accepted = parse_answer(raw_answer)
    rid_base = f"vqamed2019-{split}-{img_id}-{category or f'L{lineno}'}"
    if category is not None and category not in CATEGORIES:
        report.reject(rid_base, "unknown_category", f"{where}: category={raw_cat!r}")
        return None
    problem = ("missing_img_id" if not img_id else "empty_question" if not question
               else "empty_answer" if not answer else None)
    if problem:
        report.reject(rid_base, problem, where)
        return None
    if (tag := reserved_tag_problem(question, answer)):
        report.reject(rid_base, "reserved_tag_in_text", f"{where}: {tag}")
        return None
    image = images.path(img_id + ".jpg")
    if (why := images.problem(image)):
        report.reject(rid_base, why, image)
        return None
    rid = ids.assign(rid_base, (image, question, answer))
    if rid is None:
        report.reject(rid_base, "duplicate_row", where)
        return None
    if category is None:
        report.notes["no_category"] += 1
    meta = {"dataset": DATASET, "split": split, "answer_type": infer_answer_type(question, answer),
            "question_type": category, "organ": None, "modality": None, "boxes": [], "category": category,
            "answers": accepted, "answer_raw": raw_answer.strip(), "img_id": img_id, "source_line": where}
    return make_record(rid, image, question, answer, meta)


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def convert_from_args(args: argparse.Namespace):
    return convert(args.input, args.image_root, split=args.split, show_progress=not args.no_progress,
                   allow_outside_root=getattr(args, "allow_outside_root", False))


EPILOG = """examples:
  python -m data_process.vqa_med2019 --input ImageClef-2019-VQA-Med-Training/QAPairsByCategory \\
      --image_root ImageClef-2019-VQA-Med-Training/Train_images --out out/vqamed2019_train.json
  python -m data_process.vqa_med2019 --input VQAMed2019Test/VQAMed2019_Test_Questions_w_Ref_Answers.txt \\
      --image_root VQAMed2019Test/VQAMed2019_Test_Images --out out/vqamed2019_test.json"""


def main(argv=None) -> int:
    return module_main(DATASET, __doc__.split("\n\n")[0], EPILOG, add_arguments, convert_from_args, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
