"""The conversion report: every row read is converted, rejected (reason + id) or skipped by a filter the user set."""
from __future__ import annotations

import os
from collections import Counter, defaultdict
from typing import Any, Iterable


class Report:
    """Counts of one conversion run; `as_dict()` checks `read == converted + rejected + skipped` first."""

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
