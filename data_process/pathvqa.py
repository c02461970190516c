"""PathVQA (He et al. 2020) as its Hugging Face export has it -> records.

Input: the parquet shards of the HF dataset (`data/train-00000-of-0000N.parquet`, `validation-*`, `test-*`, or
`refs/convert/parquet` `default/<split>/0000.parquet`; a directory = its shards, sorted) or JSONL with the same fields.
Columns: `image`, `question`, `answer`. `image` is the HF Image struct `{"bytes": ..., "path": ...}` (bytes win; a
path alone is resolved under --image_root), or a path string; in JSONL the bytes are base64. Embedded bytes are written
once per distinct image to --image_dir as `<sha1>.jpg|png`. The split comes from --split or the file/folder name.

answer_type: closed iff the answer is yes/no (how the PathVQA paper splits closed- from open-ended questions).
PathVQA carries no question category, so question_type is None.
Ids: `pathvqa-<split>-<n>`, n = row position within the split over the inputs in the order given.
Rows with no image, unreadable image bytes, a missing image file or an empty question/answer are rejected.
The original release's pickle files are not read (pickle runs code on load).

    python -m data_process.pathvqa --input path-vqa/data --image_dir out/images/pathvqa --out out/pathvqa.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

from data_process.conversion.cli import module_main
from data_process.conversion.hf_table import convert_hf_table
from data_process.conversion.text import yes_no

DATASET = "pathvqa"


def _meta(row: dict, question: str, answer: str) -> dict:
    return {"answer_type": "closed" if yes_no(answer) else "open", "question_type": None, "organ": None,
            "modality": "pathology", "boxes": []}


def convert(inputs, image_dir, image_root=None, split: str | None = None,
            show_progress: bool = True, allow_outside_root: bool = False) -> tuple[list[dict], dict]:
    return convert_hf_table(DATASET, inputs, image_dir, image_root, split, ("image",), _meta,
                            show_progress=show_progress, allow_outside_root=allow_outside_root)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image_dir", default=None, metavar="DIR",
                   help="where embedded image bytes are written (default: <out dir>/images/pathvqa)")


def convert_from_args(args: argparse.Namespace):
    image_dir = args.image_dir or Path(args.out).resolve().parent / "images" / DATASET
    return convert(args.input, image_dir, args.image_root, split=args.split, show_progress=not args.no_progress,
                   allow_outside_root=getattr(args, "allow_outside_root", False))


EPILOG = """examples:
  python -m data_process.pathvqa --input path-vqa/data/test-00000-of-00002.parquet path-vqa/data/test-00001-of-00002.parquet \\
      --out out/pathvqa_test.json
  python -m data_process.pathvqa --input my_export.jsonl --image_root my_images --split train --out out/pathvqa_train.json"""


def main(argv=None) -> int:
    return module_main(DATASET, __doc__.split("\n\n")[0], EPILOG, add_arguments, convert_from_args,
                       image_root_required=False, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
