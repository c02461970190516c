"""Pieces every dataset converter shares: the report, id bookkeeping, text/answer helpers, images, row readers, CLI.

Conventions (all converters):
- `convert(...) -> (records, report)`; every row read ends up converted, rejected (reason + id) or skipped by an explicit
  filter the user asked for (`--lang`, `--split` on files that carry several splits):
  `read == converted + sum(len(ids) for ids in rejected.values()) + sum(skipped.values())`.
- Structural problems of the input (missing file, malformed JSON file, missing column) raise `DataError` naming the file
  and row; problems of one row (missing image, empty answer, unknown field value) reject that row. A .jsonl line that is
  not valid UTF-8 or not JSON is such a row: rejected as `<file>:line N` (invalid_utf8 / malformed_json).
- Image paths are written absolute, so the output JSON works from any working directory. A name that resolves outside
  --image_root (`../../x.jpg`, an absolute path elsewhere) is rejected as `image_outside_root` unless
  --allow_outside_root is given.
- A repeated id with the same content is rejected as `duplicate_row`; a repeated id with different content gets the
  deterministic suffix `-dup2`, `-dup3`, ... (order of appearance) and is counted in `notes.ids_disambiguated`.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import io as _io
import os
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tqdm import tqdm

from medvl import answers
from medvl.answers import infer_answer_type, is_choice_answer  # noqa: F401  (converters import them from here)
from medvl.paths import FileTooLarge, OutsideRoot, check_file_size, resolve_inside

from medvl.jsonio import BadLine, DataError, WriteError, iter_jsonl, read_json, write_json, write_json_list, write_jsonl
from medvl.schema import IMAGE_TAG, REGION_TAG, make_record

# --------------------------------------------------------------------------------------------------------- report


class Report:
    def __init__(self, dataset: str, inputs: Iterable[str | os.PathLike] = ()):
        self.dataset = dataset
        self.inputs = [str(p) for p in inputs]
        self.read = 0
        self.converted = 0
        self.rejected: dict[str, list[str]] = defaultdict(list)
        self.skipped: Counter = Counter()
        self.notes: Counter = Counter()
        self.details: dict[str, str] = {}
        self.extra: dict[str, Any] = {}

    def reject(self, rid: str, reason: str, detail: str | None = None) -> None:
        self.rejected[reason].append(str(rid))
        if detail:
            self.details[str(rid)] = detail

    def row_qid(self, row: Any, where: str) -> str | None:
        """A row's qid as text, or None after rejecting the row under `where`: not an object, no / empty / null
        qid (missing_qid), a qid that is neither an int nor a string (invalid_qid: true would become `x-True`)."""
        if not isinstance(row, dict):
            self.reject(where, "row_not_an_object")
            return None
        qid = row.get("qid")
        if isinstance(qid, int) and not isinstance(qid, bool):
            return str(qid)
        if isinstance(qid, str) and qid.strip():
            return qid.strip()
        self.reject(where, "missing_qid" if qid is None or isinstance(qid, str) else "invalid_qid",
                    f"{where}: qid={qid!r}")
        return None

    @property
    def n_rejected(self) -> int:
        return sum(len(v) for v in self.rejected.values())

    def check(self) -> None:
        """The accounting invariant; a violation is a converter bug, never a data problem."""
        total = self.converted + self.n_rejected + sum(self.skipped.values())
        if total != self.read:
            raise AssertionError(f"{self.dataset}: read {self.read} != converted {self.converted} + rejected "
                                 f"{self.n_rejected} + skipped {sum(self.skipped.values())}")

    def as_dict(self) -> dict:
        self.check()
        out = {"dataset": self.dataset, "inputs": self.inputs, "read": self.read, "converted": self.converted,
               "n_rejected": self.n_rejected, "rejected": {k: v for k, v in sorted(self.rejected.items())},
               "skipped": dict(sorted(self.skipped.items())), "notes": {k: v for k, v in sorted(self.notes.items()) if v},
               "details": self.details}
        out.update(self.extra)
        return out


def summary_text(report: dict) -> str:
    lines = [f"{report['dataset']}: read {report['read']}, converted {report['converted']}, "
             f"rejected {report['n_rejected']}, skipped {sum(report['skipped'].values())}"]
    for reason, ids in report["rejected"].items():
        more = f" (+{len(ids) - 3} more)" if len(ids) > 3 else ""
        lines.append(f"  rejected {reason}: {len(ids)}  e.g. {', '.join(ids[:3])}{more}")
    for reason, n in report["skipped"].items():
        lines.append(f"  skipped {reason}: {n}")
    for name, reason in (report.get("skipped_files") or {}).items():
        lines.append(f"  skipped file {name}: {reason}")
    for note, n in report["notes"].items():
        lines.append(f"  note {note}: {n}")
    return "\n".join(lines)


class IdRegistry:
    """Unique ids: same id + same content -> None (a duplicate row), same id + other content -> `<id>-dupN`."""

    def __init__(self, report: Report):
        self.report = report
        # id -> digest of its content (a list of digests once the id repeats): ~100 bytes per id, so a 500k-row
        # file streams in bounded memory
        self.seen: dict[str, bytes | list[bytes]] = {}

    def assign(self, base: str, content: Any) -> str | None:
        key = hashlib.sha1(repr(content).encode("utf-8")).digest()
        known = self.seen.get(base)
        if known is None:
            self.seen[base] = key
            return base
        if isinstance(known, bytes):
            known = self.seen[base] = [known]
        if key in known:
            return None
        known.append(key)
        self.report.notes["ids_disambiguated"] += 1
        return f"{base}-dup{len(known)}"


# --------------------------------------------------------------------------------------------------------- text

def clean_text(value: Any) -> str:
    """Short QA text: collapse runs of whitespace (tabs and double spaces occur inside released questions)."""
    return " ".join(str(value).split()) if value is not None else ""


def yes_no(answer: Any) -> str | None:
    """'yes' / 'no' by the project's one answer rule (medvl.answers.yes_no; English and SLAKE's Chinese forms)."""
    return answers.yes_no(clean_text(answer))


# --------------------------------------------------------------------------------------------------------- splits

_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
           "validation": "val", "dev": "val", "test": "test", "testing": "test"}


def canonical_split(value: Any) -> str | None:
    return _SPLITS.get(str(value).strip().lower()) if value is not None else None


def split_from_name(path: str | os.PathLike) -> str | None:
    """The split a released file name states (`train.json`, `mevf_testset.json`, `C1_Modality_val.txt`,
    `Test-0000.parquet`), else a folder named exactly after a split (`default/validation/0000.parquet`)."""
    tokens = re.split(r"[^a-z]+", Path(path).name.lower())
    found = {_SPLITS[t] for t in tokens if t in _SPLITS}
    found |= {s for t in tokens for s in ("train", "test") if t.startswith(s) and t not in _SPLITS}
    if found:
        return found.pop() if len(found) == 1 else None
    return canonical_split(Path(path).parent.name)


def resolve_split(split: str | None, path: str | os.PathLike) -> str:
    """An explicit split wins; otherwise the file name must say it."""
    if split is not None:
        s = canonical_split(split)
        if s is None:
            raise DataError(f"unknown split {split!r}: use one of train, val, test")
        return s
    s = split_from_name(path)
    if s is None:
        raise DataError(f"{path}: cannot tell the split from the file name; pass --split train|val|test")
    return s


# --------------------------------------------------------------------------------------------------------- images


class ImageResolver:
    """Absolute path of an image under `root` (or already absolute), with one filesystem check per distinct path.

    A dataset file names its images; a name that leaves the root (`../../etc/x`, an absolute path elsewhere) is
    refused unless allow_outside_root: a downloaded annotation file must not make us read arbitrary files."""

    def __init__(self, root: str | os.PathLike | None, allow_outside_root: bool = False,
                 max_image_bytes: int | None = None):
        self.root = Path(root).resolve() if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise DataError(f"image root {root}: not a directory")
        self.allow_outside_root, self.max_image_bytes = allow_outside_root, max_image_bytes
        self._file_problem: dict[str, str | None] = {}

    def path(self, name: str) -> str:
        """The resolved path (symlinks followed): what is written is where the file really is, so later stages
        judge the same file."""
        if self.root is None:
            if not os.path.isabs(name):
                raise DataError(f"relative image path {name!r} needs --image_root")
            return os.path.realpath(name)
        return str(resolve_inside(self.root, name, allow_outside=True))

    def _file(self, path: str) -> str | None:
        if path not in self._file_problem:
            if len(self._file_problem) >= 100_000:  # bounded: one stat per path among the recent ones is enough
                self._file_problem.clear()
            problem = None if os.path.isfile(path) else "image_not_found"
            try:  # by size, before anything opens it (a huge sparse file with an image header is slow to refuse)
                if problem is None:
                    check_file_size(path, self.max_image_bytes)
            except FileTooLarge as e:
                problem = e.reason
            self._file_problem[path] = problem
        return self._file_problem[path]

    def problem(self, path: str) -> str | None:
        """The rejection reason of a resolved image path (image_outside_root | image_not_found |
        image_file_too_large), None when usable."""
        if self.root is not None:
            try:
                resolve_inside(self.root, path, self.allow_outside_root)
            except OutsideRoot as e:
                return e.reason
        return self._file(path)


_EXT = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif", "WEBP": ".webp"}


class ImageStore:
    """Writes embedded image bytes once, named by content hash (the same image behind many questions is stored once)."""

    def __init__(self, out_dir: str | os.PathLike):
        self.dir = Path(out_dir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.written = 0
        self.reused = 0

    def save(self, data: bytes) -> str:
        """Absolute path of the stored image; raises ValueError when the bytes are not an image PIL can identify."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(_io.BytesIO(data)) as im:
                fmt = im.format
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            # over twice PIL's pixel limit PIL refuses to open it: a rejected row, not a crash (between once and
            # twice the limit it is stored, and validation rejects it as image_too_large from its header)
            raise ValueError(f"image bytes are not a readable image ({e})") from None
        path = self.dir / (hashlib.sha1(data).hexdigest()[:20] + _EXT.get(fmt, ".img"))
        if path.exists():
            self.reused += 1
        else:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)  # atomic: a reader never sees half an image
            except OSError as e:  # a full disk: the run stops naming the folder (not a row's fault)
                tmp.unlink(missing_ok=True)
                raise WriteError(f"{self.dir}: cannot store an image ({e.strerror or e})") from None
            self.written += 1
        return str(path)


def image_size(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def hf_image(value: Any, resolver: ImageResolver, store: ImageStore) -> str:
    """The image cell of an HF export: {"bytes", "path"} struct, a path string, or base64 bytes in JSONL.

    Raises ValueError(reason) for a row-level problem; the reason is the rejection key."""
    if value is None:
        raise ValueError("no_image")
    if isinstance(value, str):
        value = {"bytes": None, "path": value}
    if not isinstance(value, dict):
        raise ValueError("unsupported_image_value")
    data = value.get("bytes")
    if data:
        if isinstance(data, str):  # JSON cannot hold raw bytes: JSONL exports carry base64
            try:
                data = base64.b64decode(data, validate=True)
            except ValueError:
                raise ValueError("undecodable_image") from None
        try:
            return store.save(bytes(data))
        except WriteError:
            raise
        except ValueError:
            raise ValueError("undecodable_image") from None
    if value.get("path"):
        path = resolver.path(value["path"])
        problem = resolver.problem(path)
        if problem:
            raise ValueError(problem)
        return path
    raise ValueError("no_image")


# --------------------------------------------------------------------------------------------------------- readers


def expand_inputs(inputs: str | os.PathLike | Iterable, patterns: tuple[str, ...] = ("*.parquet", "*.jsonl")) -> list[Path]:
    """Input files in the given order; a directory stands for its matching files in sorted order."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = sorted(f for pat in patterns for f in p.glob(pat))
            if not found:
                raise DataError(f"{p}: directory holds no {' / '.join(patterns)} files")
            out += found
        elif not p.exists():
            raise DataError(f"{p}: file not found")
        else:
            out.append(p)
    if not out:
        raise DataError("no input files given")
    return out


def read_json_list(path: str | os.PathLike) -> list:
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
    return data


def iter_table(path: Path, required: Iterable[str]) -> tuple[int | None, Iterator[dict]]:
    """(row count if known, rows as dicts) of a parquet or JSONL file; required columns missing -> DataError."""
    required = list(required)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise DataError(f"{path}: not a readable parquet file ({e})") from None
        missing = [c for c in required if c not in pf.schema_arrow.names]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; columns are {pf.schema_arrow.names}")

        def rows():
            for batch in pf.iter_batches(batch_size=256):
                yield from batch.to_pylist()
        return pf.metadata.num_rows, rows()
    if path.suffix == ".jsonl":
        def rows():  # a bad line comes through as a BadLine: the converter rejects it by line number
            for i, row in enumerate(iter_jsonl(path, bad_lines="yield"), 1):
                if isinstance(row, dict):
                    missing = [c for c in required if c not in row]
                    if missing:
                        raise DataError(f"{path}: row {i} lacks field(s) {missing}")
                yield row
        return None, rows()
    raise DataError(f"{path}: unsupported file type {path.suffix!r} (expected .parquet or .jsonl)")


def convert_hf_table(dataset: str, inputs, image_dir, image_root, split: str | None, image_columns: tuple[str, ...],
                     make_meta: Callable[[dict, str, str], dict], split_column: str | None = None,
                     show_progress: bool = True, allow_outside_root: bool = False) -> tuple[list[dict], dict]:
    """Rows of an HF parquet/JSONL export (question, answer, an image column) -> records `<dataset>-<split>-<n>`.

    n counts the rows of a split in input order, so ids are stable for the same input files. The split is the row's
    `split_column` when there is one (rows of another split than --split are skipped), else --split, else the file name.
    `make_meta(row, question, answer)` returns the dataset-specific meta (it must set answer_type)."""
    paths = expand_inputs(inputs)
    report = Report(dataset, paths)
    resolver, store = ImageResolver(image_root, allow_outside_root), ImageStore(image_dir)
    want = canonical_split(split) if split is not None else None
    counters: Counter = Counter()
    records = []
    for path in paths:
        total, rows = iter_table(path, required=("question", "answer"))
        for i, row in enumerate(progress(rows, f"{dataset} {path.name}", total=total, enabled=show_progress)):
            report.read += 1
            where = f"{path.name}#{i}"
            if isinstance(row, BadLine):
                report.reject(row.where, row.reason, row.detail)
                continue
            if not isinstance(row, dict):
                report.reject(where, "row_not_an_object")
                continue
            col = next((c for c in image_columns if c in row), None)
            if col is None:
                raise DataError(f"{path}: row {i} has no image column (one of {list(image_columns)})")
            row_split = row.get(split_column) if split_column else None
            if row_split is not None:
                s = canonical_split(row_split)
                if s is None:
                    report.reject(where, "unknown_split_value", f"{where}: {split_column}={row_split!r}")
                    continue
                if want is not None and s != want:
                    report.skipped[f"split_{s}"] += 1
                    continue
            else:
                s = resolve_split(split, path)
            rid = f"{dataset}-{s}-{counters[s]}"
            counters[s] += 1
            question, answer = clean_text(row.get("question")), clean_text(row.get("answer"))
            if not question or not answer:
                report.reject(rid, "empty_question" if not question else "empty_answer", where)
                continue
            if (tag := reserved_tag_problem(question, answer)):
                report.reject(rid, "reserved_tag_in_text", f"{where}: {tag}")
                continue
            try:
                image = hf_image(row[col], resolver, store)
            except WriteError:  # the disk's fault, not the row's
                raise
            except ValueError as e:
                report.reject(rid, str(e), where)
                continue
            records.append(make_record(rid, image, question, answer,
                                       {"dataset": dataset, "split": s, **make_meta(row, question, answer)}))
            report.converted += 1
    report.notes.update({"images_written": store.written, "images_reused": store.reused})
    return records, report.as_dict()


def progress(it: Iterable, desc: str, total: int | None = None, enabled: bool = True) -> Iterable:
    # disable=None lets tqdm switch itself off when stderr is not a terminal (CI logs, pytest)
    return tqdm(it, desc=desc, total=total, disable=None if enabled else True, mininterval=1, leave=False)


def reserved_tag_problem(*texts: str) -> str | None:
    """`<image>` or `<region>` inside released question/answer text: the schema would read it as an image / a box,
    so the record is rejected at conversion (reserved_tag_in_text) rather than refused later."""
    found = [t for t in (IMAGE_TAG, REGION_TAG) if any(t in x for x in texts)]
    return f"text holds {' and '.join(found)}" if found else None


# --------------------------------------------------------------------------------------------------------- CLI


def report_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".report.json")


def write_outputs(records: Iterable[dict], report: dict | Callable[[], dict], out: str | os.PathLike) -> Path:
    """Write the records (streamed: a generator is never held whole), then the report; `report` may be a callable
    that gives it once the records are consumed (a streaming converter counts as it goes)."""
    out = Path(out)
    (write_jsonl if out.suffix == ".jsonl" else write_json_list)(out, records)
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
