"""Split converted records into train and val BY IMAGE: every record of one image lands on the same side.

Why by image: VQA-RAD and SLAKE ask several questions about each image; a random split by record puts the same image
in train and val, and val then measures memory of the picture rather than generalisation.

- Groups: `--by image` (default) puts records that share an image in one group (a record with several images joins
  the groups of all of them). Text-only records (no `image`) cannot share an image, so each is its own group, placed
  by a hash of its id like any other group. `--by id`: every record is its own group (one image may then land on
  both sides: use it only for data without images or where that does not matter).
- Placement: groups are ranked by sha256(seed, group key), so the same input and seed give the same split in any
  record order. `--val_fraction` is the fraction of GROUPS (images) that go to val, rounded half up, at least 1 and
  at most all but 1 when there are >= 2 groups (fewer is refused). It is shared out over the strata
  (meta.dataset, meta.organ) by largest remainder, so a mixed VQA-RAD + SLAKE file gets both datasets in val.
- Nothing is dropped: every input record is written to exactly one output, in input order; meta.split becomes
  "train" or "val" (data_trans --split val then finds the val records).
- Refused with a one-line error naming the record: a malformed record (medvl.schema), a repeated id, and a record of
  the test split (meta.split "test": 202 of VQA-RAD's 203 test images are train images too, so a split of train +
  test leaks test questions into training; convert with --split train, or pass --include_test on purpose).
- Outputs are written atomically (.json list, or .jsonl by suffix); paths are relative to the current directory.

examples:
  python -m data_process.split --input data/vqa_rad_train.json --val_fraction 0.1 --seed 0 \\
      --train_out data/train.json --val_out data/val.json
  python -m data_process.split --input data/slake_trainval.json --val_fraction 0.15 \\
      --train_out data/slake_train.json --val_out data/slake_val.json
"""
from __future__ import annotations

import argparse
import hashlib
import math
import sys
from collections import Counter
from pathlib import Path

from medvl.jsonio import DataError, read_records, write_records
from medvl.schema import image_list, record_problems

BY = ("image", "id")


def check_records(records: list, path: str, include_test: bool = False, *, unique_ids: bool = True,
                  test_hint: str = "split training data only (convert with --split train)") -> None:
    """DataError naming the first record that is malformed, repeats an id (when unique_ids), or (unless
    include_test) is a test record. data_process.captions checks its input with it too."""
    seen: set[str] = set()
    for i, rec in enumerate(records):
        rid = rec.get("id") if isinstance(rec, dict) else None
        where = f"{path}: record #{i}" + (f" (id {rid!r})" if rid is not None else "")
        problems = record_problems(rec)
        if problems:
            raise DataError(f"{where}: {'; '.join(problems)}")
        if unique_ids and str(rid) in seen:
            raise DataError(f"{where}: repeated id (each record must have its own id)")
        seen.add(str(rid))
        if not include_test and str((rec.get("meta") or {}).get("split", "")).lower() == "test":
            raise DataError(f"{where}: is a test-split record (meta.split 'test'); {test_hint} or pass --include_test")


def _groups(records: list[dict], by: str) -> list[list[int]]:
    """Record indices grouped: records sharing any image are one group (union-find), other records alone."""
    parent = list(range(len(records)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if by == "image":
        first_of_image: dict[str, int] = {}
        for i, rec in enumerate(records):
            for img in image_list(rec):
                j = first_of_image.setdefault(img, i)
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(records)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def _group_key(records: list[dict], idx: list[int], by: str) -> str:
    """What a group is placed by: its smallest image path, or its record's id when it has no image."""
    images = sorted(img for i in idx for img in image_list(records[i]))
    return f"image:{images[0]}" if by == "image" and images else f"id:{min(str(records[i]['id']) for i in idx)}"


def _stratum(records: list[dict], idx: list[int]) -> tuple[str, str]:
    counts = Counter((str((records[i].get("meta") or {}).get("dataset") or ""),
                      str((records[i].get("meta") or {}).get("organ") or "")) for i in idx)
    return min(counts, key=lambda s: (-counts[s], s))  # most common; ties by name


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _shares(sizes: dict, total: int) -> dict:
    """`total` shared over strata in proportion to their sizes (largest remainder; ties by stratum name)."""
    n = sum(sizes.values())
    exact = {s: total * k / n for s, k in sizes.items()}
    share = {s: math.floor(v) for s, v in exact.items()}
    for s in sorted(sizes, key=lambda s: (-(exact[s] - share[s]), s))[:total - sum(share.values())]:
        share[s] += 1
    return share


def split_records(records: list[dict], val_fraction: float, seed: int = 0, by: str = "image"
                  ) -> tuple[list[dict], list[dict], dict]:
    """(train, val, summary) of well-formed records (see check_records). meta.split of each output is its side."""
    if not 0 < val_fraction < 1:
        raise DataError(f"--val_fraction {val_fraction}: must be between 0 and 1 (exclusive)")
    if by not in BY:
        raise DataError(f"--by {by!r}: use one of {', '.join(BY)}")
    groups = _groups(records, by)
    if len(groups) < 2:
        raise DataError(f"{len(groups)} {'image' if by == 'image' else 'record'} group(s): "
                        f"need at least 2 to put one on each side")
    n_val = min(max(_round_half_up(val_fraction * len(groups)), 1), len(groups) - 1)

    def rank(idx: list[int]) -> str:
        return hashlib.sha256(f"{seed}\0{_group_key(records, idx, by)}".encode()).hexdigest()

    strata: dict[tuple, list[list[int]]] = {}
    for g in groups:
        strata.setdefault(_stratum(records, g), []).append(g)
    shares = _shares({s: len(gs) for s, gs in strata.items()}, n_val)
    val_idx: set[int] = set()
    for s, gs in strata.items():
        for g in sorted(gs, key=rank)[:shares[s]]:
            val_idx.update(g)
    train, val = [], []
    for i, rec in enumerate(records):
        side = "val" if i in val_idx else "train"
        out = dict(rec, meta=dict(rec.get("meta") or {}, split=side))
        (val if side == "val" else train).append(out)

    def n_images(rs: list[dict]) -> int:
        return len({img for r in rs for img in image_list(r)})

    summary = {"by": by, "seed": seed, "val_fraction": val_fraction, "groups": len(groups), "val_groups": n_val,
               "train": {"records": len(train), "images": n_images(train)},
               "val": {"records": len(val), "images": n_images(val)},
               "text_only": sum(1 for r in records if not image_list(r))}
    return train, val, summary


def summary_line(s: dict) -> str:
    text = f", text-only records split by id: {s['text_only']}" if s["text_only"] and s["by"] == "image" else ""
    return (f"split by {s['by']} (seed {s['seed']}, val_fraction {s['val_fraction']}): "
            f"train {s['train']['records']} records / {s['train']['images']} images, "
            f"val {s['val']['records']} records / {s['val']['images']} images{text}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_process.split", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, metavar="PATH", help="converted records (.json list or .jsonl)")
    p.add_argument("--val_fraction", type=float, default=0.1,
                   help="fraction of images (groups) that go to val (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="placement seed (default 0): same seed, same split")
    p.add_argument("--by", default="image", choices=BY,
                   help="image (default): all records of an image on one side, text-only records placed by id; "
                        "id: every record on its own")
    p.add_argument("--train_out", required=True, metavar="OUT", help="train records (.json list or .jsonl)")
    p.add_argument("--val_out", required=True, metavar="OUT", help="val records (.json list or .jsonl)")
    p.add_argument("--include_test", action="store_true",
                   help="accept records whose meta.split is 'test' (refused by default: it leaks test data)")
    a = p.parse_args(argv)
    if not 0 < a.val_fraction < 1:
        p.error(f"--val_fraction {a.val_fraction}: must be between 0 and 1 (exclusive)")
    if Path(a.train_out).resolve() == Path(a.val_out).resolve():
        p.error("--train_out and --val_out are the same file")
    try:
        records = read_records(a.input)
        check_records(records, a.input, a.include_test)
        try:
            train, val, summary = split_records(records, a.val_fraction, a.seed, a.by)
        except DataError as e:  # about the input as a whole: name the file
            raise DataError(f"{a.input}: {e}") from None
        write_records(a.val_out, val)
        write_records(a.train_out, train)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_line(summary) + f" -> {a.train_out}, {a.val_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
