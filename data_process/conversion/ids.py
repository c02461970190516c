"""Unique record ids across a dataset's rows (a repeated id is a duplicate row or gets a `-dupN` suffix)."""
from __future__ import annotations

import hashlib
from typing import Any

from data_process.conversion.report import Report


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
