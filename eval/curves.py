"""Training curves read back from TensorBoard event files (tensorboard's own EventAccumulator).

    runs = find_runs(["outputs/qwen2vl2b"])                 # every run_summary.json / events dir below
    runs = runs_from_results(results)                      # the adapters the evaluated models were built from

Why from the event files: they are what training wrote step by step (train/loss, eval/loss, eval/closed_accuracy,
learning rate, grad norm); run_summary.json keeps only the end. Where the events are: a stage's output dir holds
run_summary.json whose "tensorboard_dir" names them (train/finetune.py); a folder that holds events.out.tfevents.*
files is read as it is. A path given explicitly that holds neither is an error naming the path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from medvl.jsonio import DataError, read_json

EVENTS_GLOB = "events.out.tfevents.*"


@dataclass
class TrainingRun:
    label: str                                   # "stage 1", or the folder name when no run_summary.json says
    tensorboard_dir: Path
    run_dir: Path | None = None                  # the stage output dir holding run_summary.json, if any
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # tag -> [(step, value)] by step


def _has_events(d: Path) -> bool:
    return d.is_dir() and any(d.glob(EVENTS_GLOB))


def _tensorboard_dir_of(run_dir: Path) -> Path | None:
    """The events folder a run_summary.json names (relative paths: to the cwd of training, else to the run dir)."""
    summary = read_json(run_dir / "run_summary.json")
    named = summary.get("tensorboard_dir")
    candidates = []
    if named:
        p = Path(named)
        candidates += [p] if p.is_absolute() else [p, run_dir / p, run_dir / p.name]
    candidates.append(run_dir / "tensorboard")
    return next((c for c in candidates if _has_events(c)), None)


def _label(run_dir: Path | None, tb_dir: Path) -> str:
    if run_dir is not None:
        stage = read_json(run_dir / "run_summary.json").get("stage")
        if stage is None:
            return run_dir.name
        return f"stage {stage}" if run_dir.name == f"stage{stage}" else f"stage {stage} ({run_dir.name})"
    return tb_dir.parent.name if tb_dir.name == "tensorboard" else tb_dir.name


def find_runs(paths: Iterable[str | os.PathLike], strict: bool = True) -> list[TrainingRun]:
    """Training runs under each path: a stage dir (run_summary.json), an events dir, or a parent of either.

    strict: a path with no events anywhere below raises DataError (explicit --runs); otherwise it is skipped.
    The same events dir reached twice is read once."""
    runs: dict[Path, TrainingRun] = {}
    for raw in paths:
        path = Path(raw)
        found: list[tuple[Path | None, Path]] = []
        if not path.exists():
            if strict:
                raise DataError(f"{path}: training run folder not found")
            continue
        summaries = [path / "run_summary.json"] if (path / "run_summary.json").exists() else \
            sorted(path.rglob("run_summary.json"))
        for s in summaries:
            tb = _tensorboard_dir_of(s.parent)
            if tb is not None:
                found.append((s.parent, tb))
        if not found:
            dirs = [path] if _has_events(path) else sorted({p.parent for p in path.rglob(EVENTS_GLOB)})
            found = [(None, d) for d in dirs]
        if not found and strict:
            why = (f"its run_summary.json names {read_json(summaries[0]).get('tensorboard_dir')} and neither that nor "
                   f"{summaries[0].parent / 'tensorboard'} holds any (was it trained with --report_to none?)"
                   if summaries else "no run_summary.json names any either")
            raise DataError(f"{path}: no TensorBoard event files ({EVENTS_GLOB}) here or below; {why}")
        for run_dir, tb in found:
            key = tb.resolve()
            if key not in runs:
                runs[key] = TrainingRun(_label(run_dir, tb), tb, run_dir)
    out = list(runs.values())
    for run in out:
        run.scalars = read_scalars(run.tensorboard_dir)
    return sorted(out, key=lambda r: r.label)


def runs_from_results(results: Mapping[str, dict]) -> list[TrainingRun]:
    """Runs behind the evaluated models: each adapter / checkpoint of run_info.json that holds a run_summary.json."""
    dirs = []
    for res in results.values():
        info = res.get("run_info") or {}
        for p in [info.get("checkpoint"), *(info.get("adapters") or [])]:
            if p and (Path(p) / "run_summary.json").exists() and Path(p) not in dirs:
                dirs.append(Path(p))
    return find_runs(dirs, strict=False)


def read_scalars(tensorboard_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of every scalar in the folder's event files, all points kept (no reservoir sampling).

    A step logged twice (a resumed run repeats the steps after its last checkpoint) keeps the later value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags().get("scalars", []):
        by_step = {int(e.step): float(e.value) for e in acc.Scalars(tag)}
        out[tag] = sorted(by_step.items())
    return out
