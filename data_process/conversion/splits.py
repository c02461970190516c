"""Split names: the canonical train / val / test, from a field value, a file name or an explicit --split."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from medvl.jsonio import DataError

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
