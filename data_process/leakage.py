"""Leakage audit: test records that repeat training data, by image (exact or near-duplicate) or by question-answer.

    python -m data_process.leakage --train train.json --test test.json --out leakage_report.json
    python -m data_process.leakage --train vqa_rad.json slake.json pathvqa.json --test vqa_rad.json --threshold 6

Why: public medical VQA sets share sources (VQA-RAD, SLAKE, PathVQA, PMC-VQA and LLaVA-Med draw on MedPix, PubMed
figures and the same textbooks), and VQA-RAD's own test images are nearly all training images too. A score on a test
set the model has seen measures memory; this says how much of a test set is in the training data.

A test record overlaps a training record, for one or more of these reasons:
- image_exact: one of its images has the same bytes (sha256, medvl.files.sha256_file) as one of the training record's.
- image_near: an image within --threshold bits (Hamming distance, default 4) of a training image by perceptual hash,
  and not byte-identical; the report gives the distance.
- qa_pair: a question-answer turn pair equal after medvl.answers.normalize_answer on both (case, punctuation and
  articles do not count: "Yes." == "yes"), whatever the images. Generic pairs ("is this an mri? no") repeat across
  datasets; read this reason as "the answer to this question is in the training data", weaker than the image ones.
- image_question: the same image (exact or near) with the same normalised question, the answer given in training.

Perceptual hash (written here, PIL + numpy): the image as 8-bit grey (16-bit images rescaled by their own range; a
JPEG decoded at a reduced size first, PIL's draft mode, for speed), resized to 32x32 (Lanczos), 2-D DCT-II; the 8x8
lowest frequencies without the DC term are 63 coefficients; bit i is set when coefficient i is above their median.
With 63 bits and a median split every hash has 31 bits set, so distances are even. On the VQA-RAD images a copy
resized to 90% and re-encoded as JPEG quality 70, or made 20% brighter, is within 4 of the original, while the
closest two distinct images are 10 apart (24 SLAKE CT slices: 6, adjacent slices of one scan); hence the default 4.
Crops and padding of a few percent move it by up to ~8: they are not reliably found.

Comparison: exact duplicates by a dict of sha256; near ones by XOR + popcount of every distinct test hash against
every distinct training hash, in chunks: O(U_train x U_test) popcounts (about 3 ns each: 100k x 5k distinct images
is ~2 s) and chunk x U_train x 9 bytes of memory (<= 32 MB). Hashes are cached in memory per (resolved path, mtime,
size), so an image named by many records or by both sides is read once. Records are read one at a time
(medvl.jsonio.iter_records) and only ids, image keys and normalised text are kept; they are joined through inverted
indexes (image -> training records, QA pair -> training records), so time grows with the (test, training) record
pairs that overlap, not with all pairs (100k training x 5k test records over 315 shared images: ~15 s, 250 MB).

Splits: from the training files only records of --train_split (default train) and from the test files only records
of --test_split (default test) are used; a record without meta.split counts as the side it was given on; 'all' keeps
every record. So one converted file holding both splits can be given on both sides.
Relative image paths start at --image_root, else at the records file's folder. An unreadable or missing image is
listed in the report (unreadable_images) and takes part in no image comparison.

Report (--out, written atomically): params, files, counts, `summary`, `by_dataset` and `by_file` (per train x test
dataset / file: test records, test records overlapping for any reason and per reason), and `records`: per
overlapping test record its training records (at most --max_listed, with the total) and why.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from medvl.answers import normalize_answer
from medvl.files import sha256_file
from medvl.jsonio import DataError, iter_records, write_json
from medvl.schema import image_list, strip_image_tags

DEFAULT_THRESHOLD = 4
DEFAULT_MAX_LISTED = 50
REASONS = ("image_exact", "image_near", "qa_pair", "image_question")
HASH_NAME = "dct_phash_63: grey 32x32 lanczos, DCT-II, 8x8 low frequencies without DC, above-median bits"

_N = 32
_k = np.arange(_N)
_DCT = np.cos(np.pi * (2 * _k[None, :] + 1) * _k[:, None] / (2 * _N))  # DCT-II basis, rows are frequencies
_BIT_WEIGHTS = np.uint64(1) << np.arange(63, dtype=np.uint64)
_CHUNK_ELEMS = 1 << 22  # XOR buffer of chunk x U_train hashes: 4M uint64 = 32 MB (+4 MB counts)


# ------------------------------------------------------------------------------------------------ image hashes
def _grey(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit grey: rescale by the image's own range (a plain convert clips), as medvl.images does
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), mode="L")
    return im.convert("L")


def phash_image(im: Image.Image) -> int:
    """63-bit DCT perceptual hash of a PIL image (module docstring)."""
    small = _grey(im).resize((_N, _N), Image.Resampling.LANCZOS)
    a = np.asarray(small, dtype=np.float64)
    coef = (_DCT @ a @ _DCT.T)[:8, :8].ravel()[1:]  # drop DC: it is the mean brightness, always "above"
    bits = (coef > np.median(coef)).astype(np.uint64)
    return int((bits * _BIT_WEIGHTS).sum())


def phash_file(path: str | os.PathLike) -> int:
    with Image.open(path) as im:
        im.draft("L", (4 * _N, 4 * _N))  # JPEG: decode at 1/2..1/8 size; no-op for other formats
        return phash_image(im)


def hamming(a: int, b: int) -> int:
    return (int(a) ^ int(b)).bit_count()


class HashCache:
    """(sha256, phash) per image, kept per (resolved path, mtime, size): a changed file is hashed again."""

    def __init__(self):
        self._cache: dict[tuple, tuple[str, int]] = {}

    def get(self, path: str) -> tuple[str, int]:
        """(sha256, phash); OSError / image errors propagate for the caller to list."""
        st = os.stat(path)
        key = (path, st.st_mtime_ns, st.st_size)
        if key not in self._cache:
            self._cache[key] = (sha256_file(path), phash_file(path))
        return self._cache[key]


_CACHE = HashCache()


# ------------------------------------------------------------------------------------------------ records
@dataclass
class _Rec:
    id: str
    dataset: str
    file: int  # index into the side's file list
    images: list[int] = field(default_factory=list)  # indices into the image table
    qa: set = field(default_factory=set)  # (normalised question, normalised answer) per turn pair
    questions: set = field(default_factory=set)


def _turn_pairs(rec: dict) -> list[tuple[str, str]]:
    """(question, answer) of each human turn and the gpt turn after it, image tags removed."""
    turns = [t for t in rec.get("conversations") or [] if isinstance(t, dict) and isinstance(t.get("value"), str)]
    out = []
    for q, a in zip(turns, turns[1:]):
        if q.get("from") == "human" and a.get("from") == "gpt":
            out.append((normalize_answer(strip_image_tags(q["value"])[0]), normalize_answer(a["value"])))
    return out


class _Images:
    """The distinct image paths of both sides, each with an index."""

    def __init__(self):
        self.index: dict[str, int] = {}
        self.paths: list[str] = []

    def add(self, path: str) -> int:
        if path not in self.index:
            self.index[path] = len(self.paths)
            self.paths.append(path)
        return self.index[path]


def _in_split(rec: dict, split: str | None) -> bool:
    s = (rec.get("meta") or {}).get("split") if isinstance(rec.get("meta"), dict) else None
    return split is None or s is None or s == split


def _collect(records: Iterable[tuple[int, Path | None, dict]], split: str | None, images: _Images,
             image_root: Path | None) -> list[_Rec]:
    out = []
    for file_idx, file_path, rec in records:
        if not isinstance(rec, dict) or not _in_split(rec, split):
            continue
        meta = rec.get("meta") if isinstance(rec.get("meta"), dict) else {}
        r = _Rec(str(rec.get("id", f"#{len(out)}")), str(meta.get("dataset") or "unknown"), file_idx)
        base = image_root or (file_path.parent if file_path is not None else Path.cwd())
        for p in image_list(rec):
            r.images.append(images.add(str((base / p).resolve())))  # absolute paths stay as they are
        pairs = _turn_pairs(rec)
        r.qa = {qa for qa in pairs if qa[0] and qa[1]}
        r.questions = {q for q, _ in pairs if q}
        out.append(r)
    return out


def records_of_files(paths: list[str | Path]) -> Iterable[tuple[int, Path, dict]]:
    """(file index, resolved file, record) of each record of the files, read one at a time: audit()'s input."""
    for i, p in enumerate(paths):
        for rec in iter_records(p):
            yield i, Path(p).resolve(), rec


# ------------------------------------------------------------------------------------------------ comparison
def _near_pairs(test_h: np.ndarray, train_h: np.ndarray, threshold: int) -> Iterable[tuple[int, int, int]]:
    """(test position, train position, distance) of every pair within threshold: chunked XOR + popcount."""
    if not len(test_h) or not len(train_h) or threshold < 0:
        return
    chunk = max(1, _CHUNK_ELEMS // len(train_h))
    for start in range(0, len(test_h), chunk):
        block = test_h[start:start + chunk, None] ^ train_h[None, :]
        dist = np.bitwise_count(block)
        ti, tj = np.nonzero(dist <= threshold)
        for a, b in zip(ti.tolist(), tj.tolist()):
            yield start + a, b, int(dist[a, b])


def audit(train_records, test_records, *, threshold: int = DEFAULT_THRESHOLD, train_split: str | None = "train",
          test_split: str | None = "test", image_root: str | os.PathLike | None = None,
          max_listed: int = DEFAULT_MAX_LISTED, train_files: list[str] | None = None,
          test_files: list[str] | None = None, show_progress: bool = True) -> dict:
    """The leakage report (module docstring) of test records against training records.

    train_records / test_records: an iterable of records (one file) or of (file index, file path, record) triples,
    as read from several files (`train_files` / `test_files` then name them in the report). The default splits keep
    records whose meta.split is "train" / "test" or absent; None keeps every record."""
    root = Path(image_root).resolve() if image_root is not None else None

    def triples(recs):
        for item in recs:
            yield item if isinstance(item, tuple) else (0, None, item)

    images = _Images()
    train = _collect(triples(train_records), train_split, images, root)
    test = _collect(triples(test_records), test_split, images, root)
    train_files = [str(f) for f in (train_files or ["<records>"])]
    test_files = [str(f) for f in (test_files or ["<records>"])]

    # hash every distinct image once (the cache also spans calls)
    sha: list[str | None] = [None] * len(images.paths)
    ph: list[int | None] = [None] * len(images.paths)
    unreadable = []
    for i, path in enumerate(tqdm(images.paths, desc="leakage: hashing images", disable=None if show_progress else True,
                                  mininterval=1, leave=False)):
        try:
            sha[i], ph[i] = _CACHE.get(path)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            unreadable.append({"path": path, "reason": f"{type(e).__name__}: {e}"[:300]})

    train_image_ids = sorted({i for r in train for i in r.images if sha[i] is not None})
    test_image_ids = sorted({i for r in test for i in r.images if sha[i] is not None})

    # image -> images of the other side it matches: {test image: {train image: distance (0 = exact bytes)}}
    by_sha: dict[str, list[int]] = defaultdict(list)
    for i in train_image_ids:
        by_sha[sha[i]].append(i)
    img_match: dict[int, dict[int, tuple[str, int]]] = defaultdict(dict)
    for i in test_image_ids:
        for j in by_sha.get(sha[i], ()):
            img_match[i][j] = ("image_exact", 0)
    train_h = np.array([ph[j] for j in train_image_ids], dtype=np.uint64)
    test_h = np.array([ph[i] for i in test_image_ids], dtype=np.uint64)
    for a, b, d in _near_pairs(test_h, train_h, threshold):
        i, j = test_image_ids[a], train_image_ids[b]
        if j not in img_match[i]:
            img_match[i][j] = ("image_near", d)

    # inverted indexes of the training side
    train_by_image: dict[int, list[int]] = defaultdict(list)
    train_by_qa: dict[tuple, list[int]] = defaultdict(list)
    for k, r in enumerate(train):
        for i in set(r.images):
            train_by_image[i].append(k)
        for qa in r.qa:
            train_by_qa[qa].append(k)

    pair_counts: dict[tuple, Counter] = defaultdict(Counter)  # (train ds, test ds) -> reason -> test records
    file_counts: dict[tuple, Counter] = defaultdict(Counter)  # (train file, test file) -> ...
    test_per_ds = Counter(r.dataset for r in test)
    test_per_file = Counter(r.file for r in test)
    totals = Counter()
    listed = []
    for r in test:
        hits: dict[int, dict] = {}
        for i in r.images:
            for j, (why, d) in img_match.get(i, {}).items():
                for k in train_by_image.get(j, ()):
                    h = hits.setdefault(k, {"why": set(), "distance": None})
                    h["why"].add(why)
                    if why == "image_near":
                        h["distance"] = d if h["distance"] is None else min(h["distance"], d)
                    if r.questions & train[k].questions:
                        h["why"].add("image_question")
        for qa in r.qa:
            for k in train_by_qa.get(qa, ()):
                hits.setdefault(k, {"why": set(), "distance": None})["why"].add("qa_pair")
        if not hits:
            continue
        reasons_any = set()
        seen_pairs: dict[tuple, set] = defaultdict(set)
        seen_files: dict[tuple, set] = defaultdict(set)
        for k, h in hits.items():
            t = train[k]
            seen_pairs[(t.dataset, r.dataset)] |= h["why"]
            seen_files[(t.file, r.file)] |= h["why"]
            reasons_any |= h["why"]
        for key, why in seen_pairs.items():
            pair_counts[key].update(["any", *why])
        for key, why in seen_files.items():
            file_counts[key].update(["any", *why])
        totals.update(["any", *reasons_any])
        order = sorted(hits, key=lambda k: (_strength(hits[k]), k))
        listed.append({
            "test_id": r.id, "test_dataset": r.dataset, "test_file": test_files[r.file],
            "reasons": [x for x in REASONS if x in reasons_any], "n_train_overlapping": len(hits),
            "train": [{"train_id": train[k].id, "train_dataset": train[k].dataset,
                       "train_file": train_files[train[k].file],
                       "why": [x for x in REASONS if x in hits[k]["why"]],
                       **({"distance": hits[k]["distance"]} if hits[k]["distance"] is not None else {})}
                      for k in order[:max_listed]],
        })

    def rows(counts, names_train, names_test, per_test, key_names):
        out = []
        for (a, b), c in sorted(counts.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
            out.append({key_names[0]: names_train(a), key_names[1]: names_test(b), "test_records": per_test[b],
                        "overlapping": c["any"], **{x: c[x] for x in REASONS}})
        return out

    test_images_in_train = sum(1 for i in test_image_ids if img_match.get(i))
    summary = {
        "test_records": len(test), "test_records_overlapping": totals["any"],
        **{x: totals[x] for x in REASONS},
        "test_images": len(test_image_ids), "test_images_in_train": test_images_in_train,
        "test_images_exact_in_train": sum(1 for i in test_image_ids
                                          if any(w == "image_exact" for w, _ in img_match.get(i, {}).values())),
    }
    return {
        "params": {"threshold": threshold, "hash": HASH_NAME, "train_split": train_split, "test_split": test_split,
                   "max_listed": max_listed, "image_root": str(root) if root else None},
        "train_files": train_files, "test_files": test_files,
        "train_records": len(train), "test_records": len(test),
        "train_images": len(train_image_ids), "test_images": len(test_image_ids),
        "unreadable_images": unreadable,
        "summary": summary,
        "by_dataset": rows(pair_counts, str, str, test_per_ds, ("train_dataset", "test_dataset")),
        "by_file": rows(file_counts, lambda a: train_files[a], lambda b: test_files[b], test_per_file,
                        ("train_file", "test_file")),
        "records": listed,
    }


def _strength(h: dict) -> int:
    """Sort key: the strongest evidence first (same image and question, exact image, near image, QA only)."""
    why = h["why"]
    return 0 if "image_question" in why else 1 if "image_exact" in why else 2 if "image_near" in why else 3


def audit_files(train_files: list[str | Path], test_files: list[str | Path], **kw) -> dict:
    """audit() of records files (each read one record at a time)."""
    return audit(records_of_files(train_files), records_of_files(test_files),
                 train_files=[str(Path(p).resolve()) for p in train_files],
                 test_files=[str(Path(p).resolve()) for p in test_files], **kw)


def summary_line(report: dict) -> str:
    s = report["summary"]
    return (f"leakage: {s['test_records_overlapping']} of {s['test_records']} test records overlap "
            f"{report['train_records']} training records (image_exact {s['image_exact']}, image_near "
            f"{s['image_near']} at distance <= {report['params']['threshold']}, qa_pair {s['qa_pair']}, "
            f"image_question {s['image_question']}); {s['test_images_in_train']} of {s['test_images']} test images "
            f"are in the training data")


def file_warnings(report: dict) -> list[str]:
    """One line per training file that a test set overlaps (what data_trans prints)."""
    per_train = defaultdict(Counter)
    for row in report["by_file"]:
        per_train[row["train_file"]].update({k: row[k] for k in ("overlapping", *REASONS)})
    n = report["test_records"]
    return [f"warning: {c['overlapping']} of {n} test records overlap training data {f} ("
            + ", ".join(f"{x} {c[x]}" for x in REASONS) + ")"
            for f, c in per_train.items() if c["overlapping"]]


def _split_arg(value: str) -> str | None:
    return None if value == "all" else value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_process.leakage", description=__doc__.split("\n\n")[0],
                                epilog="examples:\n" + __doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", nargs="+", required=True, metavar="TRAIN.json", help="training records (.json/.jsonl)")
    p.add_argument("--test", nargs="+", required=True, metavar="TEST.json", help="test records (.json/.jsonl)")
    p.add_argument("--out", default="leakage_report.json", metavar="REPORT.json",
                   help="report file (default leakage_report.json)")
    p.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD,
                   help=f"largest perceptual-hash Hamming distance (of 63 bits) that counts as a near-duplicate "
                        f"(default {DEFAULT_THRESHOLD}; -1 turns near-duplicates off)")
    p.add_argument("--train_split", default="train", help="split of the training files to use (default train; 'all')")
    p.add_argument("--test_split", default="test", help="split of the test files to use (default test; 'all')")
    p.add_argument("--image_root", default=None,
                   help="start of relative image paths (default: the records file's folder)")
    p.add_argument("--max_listed", type=int, default=DEFAULT_MAX_LISTED,
                   help=f"training records listed per test record (default {DEFAULT_MAX_LISTED}; all are counted)")
    args = p.parse_args(argv)
    if args.threshold > 62:
        print(f"error: --threshold {args.threshold}: at most 62 (63-bit hashes)", file=sys.stderr)
        return 2
    try:
        report = audit_files(args.train, args.test, threshold=args.threshold, train_split=_split_arg(args.train_split),
                             test_split=_split_arg(args.test_split), image_root=args.image_root,
                             max_listed=args.max_listed)
        if not report["test_records"]:
            print(f"error: no record of split {args.test_split!r} in {args.test}", file=sys.stderr)
            return 2
        write_json(args.out, report)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if report["unreadable_images"]:
        print(f"warning: {len(report['unreadable_images'])} images could not be read (unreadable_images in the "
              f"report); they take part in no image comparison", file=sys.stderr)
    print(summary_line(report))
    print(f"report -> {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
