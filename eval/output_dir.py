"""One model's output folder (<out_dir>/<model>/), shared by generation and perplexity.

- Lock: fcntl.flock on <folder>/.lock, held until the process exits (the OS releases it on exit or crash). The
  holder writes its pid, host and start time into the file, so a second process can say who holds it.
- Fingerprint: what made the outputs (checkpoint and adapter identity, pixel budget, prompt, dtype, decoding). It is
  stored with each output; a run whose fingerprint differs from a stored one is refused, never mixed in.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from medvl.files import sha256_file

OUTPUT_FILES = ("predictions.jsonl", "run_info.json", "perplexity.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_held: dict[str, int] = {}  # folder -> open lock fd, kept for the life of the process


class OutputInUse(RuntimeError):
    """Another process writes into this folder."""


class SettingsChanged(RuntimeError):
    """The folder holds outputs made with other settings."""


def lock_folder(folder: Path) -> None:
    """Take the folder's lock for the rest of this process, or raise OutputInUse naming the holder."""
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    if key in _held:
        return
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = ""
        for _ in range(40):  # the holder writes its pid just after taking the lock: give it a moment
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip()
            if holder:
                break
            time.sleep(0.05)
        os.close(fd)
        holder = holder or "another process"
        raise OutputInUse(f"{folder} is in use by {holder}: wait for it to finish, or write to another "
                          f"--out_dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    _held[key] = fd


def clear_outputs(folder: Path) -> list[str]:
    """--overwrite: remove this model's earlier outputs (both kinds: they must come from one setting)."""
    gone = []
    for name in OUTPUT_FILES:
        if (folder / name).exists():
            (folder / name).unlink()
            gone.append(name)
    return gone



def weights_identity(path: str) -> dict:
    """A checkpoint or adapter dir: resolved path, sha256 of its config, and its weights: an adapter's by sha256
    (small, and retrained in place under the same name), a checkpoint's by file name, size and mtime (hashing
    gigabytes on every run is too slow). A hub id: its name and, when cached, the snapshot revision."""
    p = Path(path)
    if not p.is_dir():
        try:
            from huggingface_hub import snapshot_download
            return {"path": path, "revision": Path(snapshot_download(path, local_files_only=True)).name}
        except Exception:  # not cached / not a hub id: the name is all there is to record
            return {"path": path}
    adapter = (p / "adapter_config.json").exists()
    cfg = p / ("adapter_config.json" if adapter else "config.json")
    ident = {"path": str(p.resolve()), cfg.name: sha256_file(cfg) if cfg.exists() else None}
    weights = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in WEIGHT_SUFFIXES)
    if adapter:
        ident["weights_sha256"] = {f.name: sha256_file(f) for f in weights}
    else:
        ident["weights"] = {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in weights}
    return ident


def differing(stored: dict, new: dict, keys) -> list[str]:
    return [k for k in keys if stored.get(k) != new.get(k)]


def check_folder(folder: Path, fingerprint: dict) -> None:
    """Refuse (SettingsChanged) when an output already in `folder` was made with other settings, comparing the
    fields both fingerprints have. Predictions count only when rows exist (a run_info alone mixes nothing)."""
    stored = []
    pred = folder / "predictions.jsonl"
    if pred.exists() and pred.stat().st_size > 0:
        info = _read(folder / "run_info.json")
        stored.append(("predictions.jsonl", (info or {}).get("fingerprint")))
    if (folder / "perplexity.json").exists():
        stored.append(("perplexity.json", (_read(folder / "perplexity.json") or {}).get("fingerprint")))
    for name, old in stored:
        if old is None:
            diff = ["(no fingerprint: made before fingerprints were recorded)"]
        else:
            diff = differing(old, fingerprint, sorted(set(old) & set(fingerprint)))
        if diff:
            raise SettingsChanged(f"{folder / name} was made with other settings (differs: {', '.join(diff)}); "
                                  f"rerun with --overwrite to remove this model's outputs and start fresh, delete "
                                  f"{folder}, or use another model name / --out_dir")


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
