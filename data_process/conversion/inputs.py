"""Input files and their rows: directories expanded, JSON lists, parquet / JSONL tables, progress bars."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from medvl.jsonio import DataError, iter_jsonl, read_json


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
        import pyarrow.parquet as pq  # lazy: ~50 MiB of RSS that JSON inputs must not pay

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


def progress(it: Iterable, desc: str, total: int | None = None, enabled: bool = True) -> Iterable:
    # disable=None lets tqdm switch itself off when stderr is not a terminal (CI logs, pytest)
    return tqdm(it, desc=desc, total=total, disable=None if enabled else True, mininterval=1, leave=False)
