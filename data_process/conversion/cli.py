"""The converters' command line: the common flags, writing records + OUT.report.json, the summary, exit codes."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Iterable

from data_process.conversion.report import summary_text
from medvl.jsonio import DataError, write_json, write_records


def report_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".report.json")


def write_outputs(records: Iterable[dict], report: dict | Callable[[], dict], out: str | os.PathLike) -> Path:
    """Write the records (streamed: a generator is never held whole), then the report; `report` may be a callable
    that gives it once the records are consumed (a streaming converter counts as it goes)."""
    out = Path(out)
    write_records(out, records)
    report = report() if callable(report) else report
    rp = report_path(out)
    write_json(rp, dict(report, output=str(out.resolve())))
    return rp


def add_common_arguments(p: argparse.ArgumentParser, image_root_required: bool = True) -> None:
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="input file(s) in the dataset's released format (a directory = its data files, sorted)")
    p.add_argument("--image_root", required=image_root_required, metavar="DIR",
                   help="folder the dataset's relative image names are resolved against")
    p.add_argument("--out", required=True, metavar="OUT.json",
                   help="output records (.json list or .jsonl); the report goes to OUT.report.json")
    p.add_argument("--split", default=None, choices=["train", "val", "test"],
                   help="split of the input rows (default: from the rows or the file name)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    p.add_argument("--allow_outside_root", action="store_true",
                   help="accept image names that resolve outside --image_root (../.., absolute paths elsewhere); "
                        "refused by default (image_outside_root)")


def run_cli(convert_from_args: Callable[[argparse.Namespace], tuple[list, dict]], args: argparse.Namespace) -> int:
    try:
        records, report = convert_from_args(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    final: dict = {}

    def resolved() -> dict:  # the report as it stands once every record was written
        final.update(report() if callable(report) else report)
        return final

    try:
        rp = write_outputs(records, resolved, args.out)
    except DataError as e:  # a streaming converter meets broken input while writing
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_text(final))
    print(f"wrote {final['converted']} records to {args.out}; report {rp}")
    return 0


def module_main(name: str, description: str, epilog: str, add_arguments, convert_from_args,
                image_root_required: bool = True, argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m data_process.{name}", description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p, image_root_required)
    add_arguments(p)
    return run_cli(convert_from_args, p.parse_args(argv))
