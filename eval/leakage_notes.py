"""The leakage warning of the tables and the report: data_process.data_trans --train_data stores the audit's counts
under "leakage" in the categories.json it writes beside test.json and type_mapping.json; a test set that overlaps
training data gets one line per overlapping training file at the top of both (data_process.leakage.file_warnings,
the lines data_trans printed)."""
from __future__ import annotations

import os
from pathlib import Path

from medvl.jsonio import read_json
from data_process.leakage import file_warnings


def leakage_warnings(*files: str | os.PathLike | None) -> list[str]:
    """Warning lines from the categories.json beside each of `files` (the test data, the type mapping); each
    folder read once, a line said once. An unreadable or foreign categories.json says nothing."""
    lines: list[str] = []
    folders = dict.fromkeys(Path(f).resolve().parent for f in files if f)
    for folder in folders:
        path = folder / "categories.json"
        try:
            leak = read_json(path).get("leakage") if path.exists() else None
        except (ValueError, OSError, AttributeError):
            continue
        if not isinstance(leak, dict) or not leak.get("by_file") or not leak.get("summary"):
            continue
        report = {"by_file": leak["by_file"], "test_records": leak["summary"].get("test_records", "?")}
        for line in file_warnings(report):
            line = "LEAKAGE " + line + f" (audit: {path}; details: python -m data_process.leakage)"
            if line not in lines:
                lines.append(line)
    return lines
