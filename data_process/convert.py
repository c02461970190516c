"""One entry point for every dataset converter: released dataset files -> records in the project schema + a report.

    python -m data_process.convert <dataset> --input ... [--image_root DIR] --out OUT.json [--split train|val|test] [...]
    python -m data_process.convert <dataset> --help      (the dataset's own options and input layout)

Writes OUT.json (or .jsonl) and OUT.report.json: read / converted / rejected {reason: [ids]} / skipped {reason: n}.
Every row read is converted, rejected with its id and reason, or skipped by a filter you asked for (--lang, --split);
a .jsonl line that is not JSON / not UTF-8 is such a rejected row (`file:line N`); a broken input (missing file,
malformed .json, missing column) stops with an error naming the file and row. Image names that resolve outside
--image_root are rejected (image_outside_root) unless --allow_outside_root. See docs/reliability.md.
"""
from __future__ import annotations

import argparse
import sys

from data_process import llava_med, med_grit, medpix, pathvqa, slake, vqa_med2019, vqa_rad
from data_process.conversion.cli import add_common_arguments, run_cli

CONVERTERS = {
    "vqa_rad": (vqa_rad, True),
    "slake": (slake, True),
    "pathvqa": (pathvqa, False),
    "vqa_med2019": (vqa_med2019, True),
    "medpix": (medpix, False),
    "llava_med": (llava_med, True),
    "med_grit": (med_grit, True),
}  # name -> (module, --image_root required)

EPILOG = """examples:
  python -m data_process.convert vqa_rad --input "../shared/data/vqa_rad/VQA_RAD Dataset Public.json" \\
      --image_root "../shared/data/vqa_rad/VQA_RAD Image Folder" --out data/vqa_rad.json
  python -m data_process.convert vqa_rad --input ../shared/data/vqa_rad/mevf_testset.json \\
      --image_root "../shared/data/vqa_rad/VQA_RAD Image Folder" --out data/vqa_rad_mevf_test.json
  python -m data_process.convert slake --input Slake1.0/test.json --image_root Slake1.0/imgs --lang en --out data/slake_test.json
  python -m data_process.convert pathvqa --input path-vqa/data --image_dir data/images/pathvqa --out data/pathvqa.json
  python -m data_process.convert vqa_med2019 --input VQAMed2019Test/VQAMed2019_Test_Questions_w_Ref_Answers.txt \\
      --image_root VQAMed2019Test/VQAMed2019_Test_Images --out data/vqamed2019_test.json
  python -m data_process.convert medpix --input MEDPIX-ShortQA/data --split test --out data/medpix_test.json
  python -m data_process.convert llava_med --input llava_med_alignment_500k.json --image_root llava_med_images \\
      --out data/llava_med_stage1.json
  python -m data_process.convert med_grit --input Med-GRIT/test_VG.json --image_root SA-Med2D/images --out data/medgrit_vg.json
then: python -m data_process.data_trans --inputs data/vqa_rad.json data/slake_test.json --output_dir data/eval --split test"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_process.convert", description=__doc__.split("\n\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="dataset", required=True, metavar="dataset",
                           help=" | ".join(CONVERTERS))
    for name, (module, root_required) in CONVERTERS.items():
        doc = module.__doc__
        sp = sub.add_parser(name, help=doc.split("\n")[0], description=doc, epilog=module.EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        add_common_arguments(sp, image_root_required=root_required)
        module.add_arguments(sp)
        sp.set_defaults(convert_from_args=module.convert_from_args)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(args.convert_from_args, args)


if __name__ == "__main__":
    sys.exit(main())
