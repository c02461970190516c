"""What a pipeline stage is made from (stage_args.txt), and whether its output may be reused.

The record holds the stage's arguments, one option and its values a line, then the content of every file and
checkpoint they name (sha256 of files; of a checkpoint's config.json / merge_report.json / stage_args.txt, and its
weights by size and time, since a re-merge or retrain rewrites them). A finished stage (STAGE_DONE) with the same
record is skipped; a cut one with the same record resumes (--resume); one with another record is refused, since
skipping or resuming would mix two runs, unless it is redone: the old output is moved aside, not deleted.
"""
from __future__ import annotations

import difflib
import os
import time
from pathlib import Path

from medvl.files import sha256_file

RECORD = "stage_args.txt"
DONE = "STAGE_DONE"
CHECKPOINT_FILES = ("config.json", "merge_report.json", RECORD)  # a base checkpoint, a merge or an earlier stage
NO_RECORD = "(no record: made before stage_args.txt existed)"


class StageChanged(Exception):
    """The stage's output was made with other arguments, data or base."""


def option_lines(args: list[str]) -> list[str]:
    """`--opt v1 v2 --flag` -> ['--opt v1 v2', '--flag']: a line starts at each option."""
    lines: list[str] = []
    for a in args:
        if a.startswith("--") and lines:
            lines.append(a)
        elif lines:
            lines[-1] += f" {a}"
        else:
            lines.append(a)
    return lines


def stage_record(out: str, args: list[str]) -> str:
    """The record of a stage whose arguments are args and whose output dir is out (left out: it is the product)."""
    lines = option_lines(args)
    for a in args:
        if a == out:
            continue
        p = Path(a)
        if p.is_file():
            lines.append(f"sha256 {sha256_file(p)} {a}")
        if not p.is_dir():
            continue
        for name in CHECKPOINT_FILES:
            if (p / name).is_file():
                lines.append(f"sha256 {sha256_file(p / name)} {a}/{name}")
        for w in sorted(p.glob("*.safetensors")):
            st = w.stat()
            lines.append(f"weights {st.st_size} {int(st.st_mtime)} {a}/{w.name}")
    return "\n".join(lines)


def record_diff(had: str, want: str) -> str:
    """'was: ...; now: ...' for the lines that differ, hunk by hunk."""
    a, b = had.splitlines(), want.splitlines()
    parts = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            parts += [f"was: {x}" for x in a[i1:i2]] + [f"now: {x}" for x in b[j1:j2]]
    return "; ".join(parts)


def decide(stage: int, out: Path, want: str, redo_changed: bool, nnodes: int) -> str:
    """'run' (fresh or resume), 'skip' (done with this record) or 'redo' (changed, to be moved aside and retrained).
    Raises StageChanged when the output was made otherwise and redoing is not asked for (or several nodes share it:
    one node moving it would pull it from under the others)."""
    if not ((out / RECORD).is_file() or (out / DONE).is_file()):
        return "run"
    had = (out / RECORD).read_text().rstrip("\n") if (out / RECORD).is_file() else NO_RECORD
    if had == want:
        return "skip" if (out / DONE).is_file() else "run"
    if not redo_changed or nnodes > 1:
        raise StageChanged(f"stage {stage} in {out} was made with other arguments ({record_diff(had, want)}): "
                           "REDO_CHANGED=1 moves it aside and trains it again (one node only: with several, move it "
                           "yourself), or use another OUTPUT_DIR")
    return "redo"


def move_aside(path: Path) -> Path | None:
    """Keep an output made with other arguments, out of the way: path.replaced-<time>."""
    if not path.exists():
        return None
    aside = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(aside)
    print(f"moved {path} aside to {aside}")
    return aside


def write_record(out: Path, want: str, node_rank: int) -> None:
    """Atomically (several nodes may write the same record to a shared dir)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{RECORD}.{node_rank}.{os.getpid()}"
    tmp.write_text(want + "\n")
    tmp.replace(out / RECORD)
