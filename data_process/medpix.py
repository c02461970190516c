"""MedPix-ShortQA (HF `adishourya/MEDPIX-ShortQA`) -> records.

What its dataset card declares (the card has no prose; this is all we rely on): parquet shards `data/Train-*`,
`data/Valid-*`, `data/Test-*` with features `image_id` (an HF Image: `{"bytes", "path"}`), `case_id`, `question`,
`answer`, `ans_len` (int), `mode` (string), `split` (string). An `image` column is accepted in place of `image_id`, and
JSONL with the same fields (image as a path or base64 bytes) as well. The card does not say what `mode` holds, so it is
kept as `meta.mode` and not interpreted as a modality.

Split: the row's `split` column (Train/Valid/Test -> train/val/test; with --split, rows of other splits are skipped),
else --split or the file name. answer_type: closed when the answer is yes/no or one of the options the question offers.
Embedded images are written once per distinct image to --image_dir. Ids: `medpix-<split>-<n>` (row position within the
split over the inputs in the order given).

    python -m data_process.medpix --input MEDPIX-ShortQA/data --split test --out out/medpix_test.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

from data_process.conversion.cli import module_main
from data_process.conversion.hf_table import convert_hf_table
from medvl.answers import infer_answer_type

DATASET = "medpix"


def _meta(row: dict, question: str, answer: str) -> dict:
    return {"answer_type": infer_answer_type(question, answer), "question_type": None, "organ": None,
            "modality": None, "boxes": [], "case_id": row.get("case_id"), "mode": row.get("mode")}


def convert(inputs, image_dir, image_root=None, split: str | None = None,
            show_progress: bool = True, allow_outside_root: bool = False) -> tuple[list[dict], dict]:
    return convert_hf_table(DATASET, inputs, image_dir, image_root, split, ("image_id", "image"), _meta,
                            split_column="split", show_progress=show_progress, allow_outside_root=allow_outside_root)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image_dir", default=None, metavar="DIR",
                   help="where embedded image bytes are written (default: <out dir>/images/medpix)")


def convert_from_args(args: argparse.Namespace):
    image_dir = args.image_dir or Path(args.out).resolve().parent / "images" / DATASET
    return convert(args.input, image_dir, args.image_root, split=args.split, show_progress=not args.no_progress,
                   allow_outside_root=getattr(args, "allow_outside_root", False))


EPILOG = """examples:
  python -m data_process.medpix --input MEDPIX-ShortQA/data --out out/medpix_all.json
  python -m data_process.medpix --input MEDPIX-ShortQA/data --split test --out out/medpix_test.json"""


def main(argv=None) -> int:
    return module_main(DATASET, __doc__.split("\n\n")[0], EPILOG, add_arguments, convert_from_args,
                       image_root_required=False, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
