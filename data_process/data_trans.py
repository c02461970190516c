"""Evaluation inputs from converted records: `test.json` (the records of one split), `type_mapping.json` and
`categories.json`.

    python -m data_process.data_trans --inputs vqa_rad.json slake.json --output_dir eval_data [--split test]

type_mapping.json is a flat lookup `{id: {"answer_type", "closed_type" (closed only), "dataset", <native category>}}`;
categories.json holds the counts per dataset and category (kept apart so the mapping holds nothing but ids).
With --train_data, the test records are audited against those training records (data_process.leakage: same or
near-duplicate image, same question-answer pair, same image and question): one warning line per overlapping training
file on stderr, and the counts in categories.json under "leakage" (the full report: python -m data_process.leakage).

    python -m data_process.data_trans --inputs vqa_rad.json --output_dir eval_data --train_data train.json

The three are written as one set, with `set.manifest.json` (their sha256): every reader (medvl.jsonio) refuses a
set that a kill left half-replaced, naming the files, instead of pairing a new test.json with an old mapping.
Native categories: VQA-RAD `question_type` (canonical, combinations joined with ", "), SLAKE `content_type`,
VQA-Med 2019 `category`; other datasets pass their `question_type` when they have one.

Rules of `categorize` (the reference answer is the last answer turn, the question the first human turn without image
tags):
- answer_type: meta.answer_type when it is "closed"/"open", else closed iff the answer is yes/no (medvl.answers.yes_no).
- closed_type, closed questions only: medvl.categories.closed_type (yes_no, modality, position, general; its docstring
  holds the rules), the one rule evaluation uses as well.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from data_process import leakage
from medvl.categories import NATIVE_KEY, categorize  # noqa: F401  (NATIVE_KEY: tests/test_evaluate.py reads it here)
from medvl.jsonio import DataError, read_records, write_json_set
from medvl.schema import record_problems

def summarize(mapping: dict[str, dict]) -> dict:
    """Counts per dataset: answer_type, closed_type and the native category."""
    per: dict[str, dict[str, Counter]] = {}
    for info in mapping.values():
        d = per.setdefault(info["dataset"], {})
        d.setdefault("n", Counter())["records"] += 1
        for key, value in info.items():
            if key != "dataset":
                d.setdefault(key, Counter())[str(value)] += 1
    datasets = {ds: {"n": c.pop("n")["records"], **{k: dict(v.most_common()) for k, v in c.items()}}
                for ds, c in sorted(per.items())}
    totals = {k: dict(Counter(str(i.get(k)) for i in mapping.values() if k in i).most_common())
              for k in ("answer_type", "closed_type")}
    return {"total": len(mapping), **totals, "datasets": datasets}


def build(inputs: list[str | Path], split: str | None = "test") -> tuple[list[dict], dict, dict]:
    """(records of the split, type mapping, summary). Malformed records or repeated ids raise DataError."""
    selected, seen, per_input = [], {}, {}
    for path in inputs:
        records = read_records(path)
        n = 0
        for i, rec in enumerate(tqdm(records, desc=f"data_trans {Path(path).name}", disable=None, mininterval=1)):
            problems = record_problems(rec)
            rid = rec.get("id", f"#{i}") if isinstance(rec, dict) else f"#{i}"
            if problems:
                raise DataError(f"{path}: record {rid}: {'; '.join(problems)}")
            if split is not None and (rec.get("meta") or {}).get("split") != split:
                continue
            if str(rid) in seen:  # 7 and "7" are one id: type_mapping.json keys are strings
                raise DataError(f"{path}: record id {rid!r} also in {seen[str(rid)]}; ids must be unique across "
                                f"inputs (7 and \"7\" are the same id)")
            seen[str(rid)] = str(path)
            selected.append(rec)
            n += 1
        per_input[str(path)] = {"records": len(records), "selected": n}
    mapping = {str(r["id"]): categorize(r) for r in selected}
    summary = {"split": split, "inputs": per_input, **summarize(mapping)}
    return selected, mapping, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_process.data_trans", description=__doc__.split("\n\n")[0],
                                epilog="examples:\n" + __doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", "--input", dest="inputs", nargs="+", required=True, metavar="RECORDS.json",
                   help="converted records (.json/.jsonl)")
    p.add_argument("--output_dir", "--out_dir", dest="output_dir", required=True, metavar="DIR",
                   help="folder of the set (test.json, type_mapping.json, categories.json); --out_dir is the old name")
    p.add_argument("--split", default="test", help="split to keep (default test; 'all' keeps every record)")
    p.add_argument("--out_name", default="test.json", help="file name of the selected records (default test.json)")
    p.add_argument("--train_data", nargs="+", default=None, metavar="TRAIN.json",
                   help="training records to audit the test set against (data_process.leakage; records of split "
                        "train or without a split): a warning per overlapping file, counts in categories.json")
    args = p.parse_args(argv)
    split = None if args.split == "all" else args.split
    try:
        records, mapping, summary = build(args.inputs, split)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not records:
        print(f"error: no record of split {args.split!r} in {args.inputs}", file=sys.stderr)
        return 2
    if args.train_data:
        try:
            report = leakage.audit(leakage.records_of_files(args.train_data), records, train_split="train",
                                   test_split=None,
                                   train_files=[str(Path(f).resolve()) for f in args.train_data],
                                   test_files=[str((Path(args.output_dir) / args.out_name).resolve())])
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for line in leakage.file_warnings(report):
            print(line, file=sys.stderr)
        summary["leakage"] = {"train_data": report["train_files"], "params": report["params"],
                              "summary": report["summary"], "by_file": report["by_file"]}
    out = Path(args.output_dir)
    # one set: a reader never pairs a new test.json with an old type_mapping.json (io.write_json_set)
    try:
        write_json_set(out, {args.out_name: records, "type_mapping.json": mapping, "categories.json": summary})
    except DataError as e:  # a full or read-only disk
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(records)} records of split {args.split} -> {out / args.out_name}")
    print(f"answer_type {summary['answer_type']}; closed_type {summary['closed_type']}")
    for ds, c in summary["datasets"].items():
        print(f"  {ds}: {c['n']} records, {c.get('answer_type')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
