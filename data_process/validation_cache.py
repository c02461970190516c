"""Reuse a validation result when nothing it depends on changed: the records, their image files, the preprocessing.

Why: training validates its data before step 0 (every stage, every rerun), and `data_process.validate` has often
done it already: 2 min 37 s for 1,974 VQA-RAD records on 2 cores, each time. A result is keyed by
  - the records themselves (canonical JSON),
  - each image file they name: path, size and modification time (an edited or replaced image changes the key),
  - the preprocessing: tokenizer (its full serialisation), image processor config, max_len, truncation, image root
    and path rule, image size limit, system prompt, model family.
data_process/validate.py's validate_cached looks a verdict up and stores it. It stores the kept ids and the report under MEDVL_CACHE_DIR (default ~/.cache/medvl/validation), written atomically.
MEDVL_NO_VALIDATION_CACHE=1 turns it off. A record list holding an unreadable line (BadLine) is never cached.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from medvl.jsonio import BadLine, DataError, read_json, write_json
from medvl.paths import MAX_IMAGE_BYTES
from medvl.samples import DEFAULT_SYSTEM
from medvl.schema import image_list

log = logging.getLogger(__name__)
VERSION = 1  # bump when what validation checks changes: old entries then miss


def cache_dir() -> Path:
    return Path(os.environ.get("MEDVL_CACHE_DIR") or Path.home() / ".cache" / "medvl" / "validation")


def enabled() -> bool:
    return os.environ.get("MEDVL_NO_VALIDATION_CACHE", "") in ("", "0")


def preprocessing_identity(processor) -> dict:
    """What a VLProcessor's verdict on a record depends on, besides the record and its images."""
    tok = processor.tokenizer
    backend = getattr(tok, "backend_tokenizer", None)
    tok_text = backend.to_str() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True)
    return {"tokenizer": hashlib.sha256(tok_text.encode()).hexdigest(),
            "chat_template": hashlib.sha256((tok.chat_template or "").encode()).hexdigest(),
            "image_processor": processor.image_processor.to_dict(), "max_len": processor.max_len,
            "image_root": str(processor.image_root) if processor.image_root else None,
            "truncation": processor.truncation, "allow_outside_root": processor.allow_outside_root,
            "max_image_bytes": processor.max_image_bytes or MAX_IMAGE_BYTES,  # None means the default "family": processor.family.name,
            "system_prompt": "<the template's default>" if processor.prompt.system_prompt is DEFAULT_SYSTEM
            else repr(processor.prompt.system_prompt)}


def _image_state(name: str, root) -> list:
    path = Path(name) if Path(name).is_absolute() or not root else Path(root) / name
    try:
        st = path.stat()
    except OSError:
        return [str(path), None]
    return [str(path), st.st_size, st.st_mtime_ns]


def cache_key(records: list, processor) -> str | None:
    """The key of one validation, or None when it cannot be cached (turned off, or a BadLine among the records)."""
    if not enabled() or any(isinstance(r, BadLine) or not isinstance(r, dict) for r in records):
        return None
    h = hashlib.sha256(f"v{VERSION}".encode())
    h.update(json.dumps(preprocessing_identity(processor), sort_keys=True, default=str).encode())
    for r in records:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False, default=str).encode())
        try:
            images = image_list(r)
        except (TypeError, ValueError):  # malformed: validation rejects it; the record text is in the key already
            images = []
        for name in images:
            h.update(json.dumps(_image_state(str(name), processor.image_root)).encode())
    return h.hexdigest()


def store(key: str, kept: list[dict], report: dict) -> None:
    try:
        write_json(cache_dir() / f"{key}.json", {"kept_ids": [str(r["id"]) for r in kept], "report": report})
    except (OSError, DataError) as e:  # a read-only home: validation still ran, only its reuse is lost
        log.warning("validation result not cached (%s)", e)


def lookup(key: str | None, records: list) -> tuple[list[dict], dict, str] | None:
    """(kept records, report, cache file) of a stored verdict for these records, or None."""
    if key is None:
        return None
    hit = cache_dir() / f"{key}.json"
    if not hit.is_file():
        return None
    try:
        saved = read_json(hit)
        kept_ids, report = set(saved["kept_ids"]), saved["report"]
    except (DataError, KeyError, TypeError):  # a damaged entry: validate again (and overwrite it)
        return None
    kept = [r for r in records if str(r["id"]) in kept_ids]
    return (kept, report, str(hit)) if len(kept) == report.get("kept") else None
