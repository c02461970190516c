"""Which checkpoint a resumed run starts from: the last COMPLETE one.

The HF Trainer writes `checkpoint-N/` in place (weights, optimizer, scheduler, RNG states; DeepSpeed's shards under
`global_stepN/`), then `trainer_state.json` last. A job killed while saving leaves a `checkpoint-N/` without it, or
with it cut short, and `transformers.trainer_utils.get_last_checkpoint` (5.x) still picks that directory, by number
alone: the resume then fails on a half-written file or, worse, loads it. So a checkpoint counts only when its
trainer_state.json parses and names its own step.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_problem(path: str | Path) -> str | None:
    """Why `path` is not a complete checkpoint, or None when it is."""
    path = Path(path)
    m = _CHECKPOINT.match(path.name)
    if not m or not path.is_dir():
        return "not a checkpoint-N directory"
    state = path / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (the save was cut before its last file)"
    try:
        step = json.loads(state.read_text(encoding="utf-8")).get("global_step")
    except (ValueError, UnicodeDecodeError) as e:
        return f"trainer_state.json is cut short or corrupt ({e})"
    if step != int(m.group(1)):
        return f"trainer_state.json says step {step}, the directory says {m.group(1)}"
    return None


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The highest-numbered complete checkpoint-N under output_dir (None if there is none); incomplete ones newer
    than it are named in the log and left in place (the resumed run overwrites them when it reaches their step)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in output_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir())
    for _, path in reversed(found):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        log.warning("skipping incomplete checkpoint %s: %s", path, problem)
    return None
