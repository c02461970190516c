"""Which checkpoint a resumed run starts from: the last COMPLETE one.

The HF Trainer writes `checkpoint-N/` in place (weights, optimizer, scheduler, RNG states; DeepSpeed's shards under
`global_stepN/`), then `trainer_state.json` last. A job killed while saving leaves a `checkpoint-N/` without it, or
with it cut short, and `transformers.trainer_utils.get_last_checkpoint` (5.x) still picks that directory, by number
alone: the resume then fails on a half-written file or, worse, loads it. So a checkpoint counts only when its
trainer_state.json parses and names its own step.

A checkpoint is also code: DeepSpeed reads its `global_stepN/*optim_states.pt` with pickle. So every save ends with a
manifest (sha256 of each file, ManifestOnSave), and a resume refuses, before anything is loaded, a checkpoint with a
file changed, added or missing since (verify_checkpoint). The manifest shows the files are the ones this run wrote;
it is no signature: a whole checkpoint folder from elsewhere can carry a matching manifest of its own.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from transformers import TrainerCallback

from medvl.files import sha256_file
from medvl.jsonio import write_json

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
MANIFEST = "checkpoint_manifest.json"


class UntrustedCheckpoint(ValueError):
    """A checkpoint whose files are not the ones its save wrote (or that has no manifest)."""


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
    than it are named in the log and left in place (the resumed run overwrites them when it reaches their step).
    Where the run writes manifests (any checkpoint has one), one without it was cut while its manifest was made."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in output_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir())
    manifested = any((p / MANIFEST).is_file() for _, p in found)
    for _, path in reversed(found):
        problem = checkpoint_problem(path)
        if problem is None and manifested and not (path / MANIFEST).is_file():
            problem = f"no {MANIFEST} (the save was cut before its manifest)"
        if problem is None:
            return str(path)
        log.warning("skipping incomplete checkpoint %s: %s", path, problem)
    return None



def _files(checkpoint: Path) -> dict[str, Path]:
    return {p.relative_to(checkpoint).as_posix(): p for p in sorted(checkpoint.rglob("*"))
            if (p.is_file() or p.is_symlink()) and p.name != MANIFEST}


def write_manifest(checkpoint: str | Path) -> None:
    checkpoint = Path(checkpoint)
    write_json(checkpoint / MANIFEST, {"sha256": {rel: sha256_file(p) for rel, p in _files(checkpoint).items()}})


def manifest_problem(checkpoint: str | Path) -> str | None:
    """Why the checkpoint's files are not the ones its manifest lists, naming the first such file; None if they are."""
    checkpoint = Path(checkpoint)
    if not (checkpoint / MANIFEST).is_file():
        return f"no {MANIFEST} (written elsewhere, or by a version without manifests)"
    try:
        want = json.loads((checkpoint / MANIFEST).read_text(encoding="utf-8"))["sha256"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        return f"{MANIFEST} is unreadable ({e})"
    have = _files(checkpoint)
    for rel, p in have.items():
        if rel not in want:
            return f"{rel} is not in the manifest (added after the save)"
        if p.is_symlink() or sha256_file(p) != want[rel]:
            return f"{rel} differs from the manifest (changed after the save)"
    missing = sorted(set(want) - set(have))
    return f"{missing[0]} is missing (listed in the manifest)" if missing else None


def verify_checkpoint(checkpoint: str | Path, trust: bool = False) -> None:
    """Refuse (UntrustedCheckpoint, one line) to resume from a checkpoint that fails its manifest, unless trusted."""
    problem = manifest_problem(checkpoint)
    if problem is None:
        return
    if trust:
        log.warning("resuming from %s although %s (--trust_checkpoint)", checkpoint, problem)
        return
    raise UntrustedCheckpoint(
        f"refusing to resume from {checkpoint}: {problem}. A checkpoint is code (DeepSpeed unpickles its optimizer "
        f"files): resume only from checkpoints you wrote, or pass --trust_checkpoint to accept this one")


class ManifestOnSave(TrainerCallback):
    """After each checkpoint save (every rank has written its files: barrier), the saving process hashes them."""

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        if args.should_save:
            write_manifest(Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
