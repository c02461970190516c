"""Reading and writing records: JSON / JSONL, always written atomically (temp file + rename).

Reading accepts a UTF-8 byte order mark (editors on Windows write one). JSON nested too deeply for the decoder and a
write that fails for lack of space (or a read-only / over-quota disk) are DataErrors naming the file, so every CLI
prints them as one line."""
from __future__ import annotations

import codecs
import contextlib
import errno
import glob
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

from medvl.files import sha256_file


class DataError(ValueError):
    """Bad input: the message names the file / record and the reason."""


class WriteError(DataError):
    """An output could not be written (disk full, read-only, over quota): the message names the file."""


# errors of the disk, not of the program: reported as one line naming the output
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


@dataclass(frozen=True)
class BadLine:
    """A .jsonl line that is not a JSON record. Lenient readers yield it in place of the record, so whoever
    counts records (converter / validation report) rejects it by name instead of stopping or dropping it."""
    path: str
    lineno: int
    reason: str  # invalid_utf8 | malformed_json
    detail: str

    @property
    def where(self) -> str:
        return f"{Path(self.path).name}:line {self.lineno}"


@contextlib.contextmanager
def _staged(path: Path) -> Iterator[tuple[TextIO, str]]:
    """(file, temp path) beside `path`: written, fsynced and made 0644 on exit; removed if the body raises."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise WriteError(f"{path}: cannot create a file in {path.parent} ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f, tmp
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
            raise WriteError(f"{path}: writing failed ({e.strerror}); nothing was written there") from None
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[TextIO]:
    """A text file that appears at `path` complete or not at all (temp file, fsync, rename); streams any size."""
    path = Path(path)
    with _staged(path) as (f, tmp):
        yield f
    _replace(tmp, path)


def _replace(tmp: str, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"{path}: cannot replace it ({e.strerror or e})") from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    """One JSON object per line, streamed (rows may be a generator); returns the number of rows written."""
    n = 0
    with atomic_open(path) as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json_list(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    """A JSON list with one record per line, streamed like write_jsonl; returns the number of rows written."""
    n = 0
    with atomic_open(path) as f:
        f.write("[")
        for r in rows:
            f.write(("\n" if n == 0 else ",\n") + json.dumps(r, ensure_ascii=False))
            n += 1
        f.write("\n]\n")
    return n


# ------------------------------------------------------------------------------------------------ file sets
SET_MANIFEST = "set.manifest.json"



def write_json_set(out_dir: str | os.PathLike, objects: dict[str, Any]) -> None:
    """JSON files that belong together (data_trans' test.json + type_mapping.json + categories.json), so that no
    reader ever takes a mix of two runs: each is staged as a temp file, then `set.manifest.json` (their sha256) is
    written, then they are renamed into place. A kill before the manifest leaves the old set untouched; after it, a
    file that is not the new one fails the check every reader makes (check_set). Temp files of killed writes of
    these names are removed first."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in [*objects, SET_MANIFEST]:
        for left in out.glob(f".{glob.escape(name)}.*.tmp"):
            left.unlink(missing_ok=True)
    staged: dict[str, str] = {}
    try:
        for name, obj in objects.items():
            with _staged(out / name) as (f, tmp):
                f.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")
            staged[name] = tmp
        write_json(out / SET_MANIFEST, {"written_together": {n: sha256_file(t) for n, t in staged.items()}})
    except BaseException:
        for tmp in staged.values():
            Path(tmp).unlink(missing_ok=True)
        raise
    for name, tmp in staged.items():
        _replace(tmp, out / name)


def check_set(path: str | os.PathLike) -> None:
    """DataError when `path` is listed in a set.manifest.json beside it and any file of that set does not match it."""
    path = Path(path)
    manifest = path.parent / SET_MANIFEST
    if path.name == SET_MANIFEST or not manifest.is_file():
        return
    try:
        listed = json.loads(manifest.read_text(encoding="utf-8"))["written_together"]
        if path.name not in listed:
            return
        bad = [n for n, h in listed.items() if not (path.parent / n).is_file() or sha256_file(path.parent / n) != h]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DataError(f"{manifest}: malformed set manifest; rerun the step that wrote {path.parent}") from None
    if bad:
        raise DataError(f"{path}: {', '.join(bad)} in {path.parent} not the file(s) {SET_MANIFEST} lists (a write "
                        f"of this set was interrupted, or a file was changed after): rerun the step that wrote it "
                        f"(data_trans)")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    check_set(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to read") from None


def iter_jsonl(path: str | os.PathLike, bad_lines: str = "raise") -> Iterator[Any]:
    """Yield one object per non-empty line. A line that is not valid UTF-8 or not JSON raises DataError naming its
    line number (bad_lines="raise"), or is yielded as a BadLine (bad_lines="yield") for the caller to reject."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
                reason = ("invalid_utf8" if isinstance(e, UnicodeDecodeError) else
                          "nested_too_deeply" if isinstance(e, RecursionError) else "malformed_json")
                detail = "JSON nested too deeply to read" if isinstance(e, RecursionError) else str(e)
                if bad_lines != "yield":
                    raise DataError(f"{path}: line {lineno} is not a valid JSON record ({detail})") from None
                obj = BadLine(str(path), lineno, reason, detail)
            yield obj


def iter_json_list(path: str | os.PathLike, chunk_chars: int = 1 << 20) -> Iterator[Any]:
    """The elements of a top-level JSON list, decoded one at a time from a bounded buffer (a 500k-record file is
    never held whole). A malformed element raises DataError naming its index: a JSON list cannot resync."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8-sig") as f:
        buf, pos, eof, index = "", 0, False, 0

        def fill() -> bool:  # more text appended to buf; False at end of file
            nonlocal buf, pos, eof
            try:
                chunk = f.read(max(chunk_chars, len(buf) - pos))  # doubles the window for one huge element
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: not valid UTF-8 after list element {index} ({e})") from None
            buf, pos, eof = buf[pos:] + chunk, 0, not chunk
            return bool(chunk)

        def skip_ws() -> str:  # the next non-space character ('' at end of file)
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf) or not fill():
                    return buf[pos] if pos < len(buf) else ""

        if skip_ws() != "[":
            raise DataError(f"{path}: expected a JSON list of records")
        pos += 1
        while True:
            c = skip_ws()
            if c == "]":
                pos += 1
                if skip_ws():
                    raise DataError(f"{path}: text after the end of the JSON list")
                return
            if index:
                if c != ",":
                    raise DataError(f"{path}: malformed JSON after list element {index - 1}: expected ',' or ']'")
                pos += 1
                skip_ws()
            while True:
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                    if end < len(buf) or eof:  # an element ending at the buffer's end may continue (a number)
                        break
                except json.JSONDecodeError as e:
                    if eof:
                        raise DataError(f"{path}: malformed JSON in list element {index}: {e.msg}") from None
                except RecursionError:
                    raise DataError(f"{path}: list element {index} is JSON nested too deeply to read") from None
                fill()
            pos = end
            index += 1
            yield obj


def read_records(path: str | os.PathLike, bad_lines: str = "raise") -> list:
    """Records from a .json list or a .jsonl file (bad_lines: see iter_jsonl)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        check_set(path)
        return list(iter_jsonl(path, bad_lines))
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def iter_records(path: str | os.PathLike, bad_lines: str = "raise") -> Iterator[Any]:
    """Records one at a time from a .jsonl file or a .json list, in bounded memory (see iter_jsonl, iter_json_list)."""
    check_set(path)
    return iter_jsonl(path, bad_lines) if Path(path).suffix == ".jsonl" else iter_json_list(path)


def write_records(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    """Records as a .jsonl file or a .json list, by the suffix (read_records' rule), atomically; streamed."""
    return (write_jsonl if Path(path).suffix == ".jsonl" else write_json_list)(path, rows)


def completed_ids(path: Path) -> set[str]:
    """Ids already in a predictions file; a trailing partial line (killed mid-write) is cut off."""
    if not path.exists():
        return set()
    done, good_bytes = set(), 0
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                done.add(str(json.loads(line)["id"]))
            except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
                break
            good_bytes += len(line)
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return done
