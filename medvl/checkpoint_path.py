"""What a --model / --model_name_or_path string names, decided before transformers sees it.

transformers takes any string that is not an existing folder for a hub id: a mistyped local path then fails with
"Repo id must be in the form ..." or a connection error, and a hub id without network is retried five times. This
module tells a path from a hub id and refuses, in one line, a folder that is not there, a folder that holds no
checkpoint, and a hub id that can be neither read from the local cache nor downloaded.
"""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

CONNECT_TIMEOUT_S = 3.0
_TRUE = {"1", "ON", "YES", "TRUE"}


class CheckpointNotFound(ValueError):
    """A model path or hub id that cannot be loaded; the message is one line naming it and why."""


def resolve_checkpoint(path_or_id: str, required: str | None = "config.json") -> str:
    """The local folder (`~` expanded) or the hub id to hand to from_pretrained, else CheckpointNotFound.

    `required`: the file a local folder must hold (config.json for a model; None when only the folder is needed,
    e.g. a processor whose family is already known)."""
    text = str(path_or_id)
    p = Path(text).expanduser()
    if p.is_dir():
        if required and not (p / required).is_file():
            hint = " (it holds adapter_config.json: an adapter, which goes on top of its base)" \
                if (p / "adapter_config.json").is_file() else ""
            raise CheckpointNotFound(f"{text} holds no {required}: not a checkpoint folder{hint}")
        return str(p)
    if p.exists():
        raise CheckpointNotFound(f"{text} is a file, not a checkpoint folder")
    hub_shaped = _is_repo_id(text)
    if hub_shaped and _in_hf_cache(text):
        return text
    if not hub_shaped or _looks_like_path(text):
        raise CheckpointNotFound(f"no such folder: {text} (resolved to {p.resolve()})")
    if _offline() or not _hub_reachable():
        # the id may be a mistyped folder too (models/qwen2vl without a models/ here): say that neither exists
        raise CheckpointNotFound(f"no hub access: pass a local checkpoint folder ({text} is not in the local Hugging "
                                 f"Face cache and {_hub_host()[0]} cannot be reached; no folder {p.resolve()} either)")
    return text


def _is_repo_id(text: str) -> bool:
    """`name` or `org/name` as the hub spells ids (not a path of three parts, no trailing slash)."""
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return text.count("/") <= 1


def _looks_like_path(text: str) -> bool:
    """Written as a path (/x, ./x, ../x, ~/x, a Windows separator) or its first part exists here: `models/qwen2vl`
    with a local models/ folder is a mistyped folder, not a hub repo."""
    if text.startswith(("/", ".", "~")) or (os.altsep and os.altsep in text) or (os.sep != "/" and os.sep in text):
        return True
    first = text.split("/", 1)[0]
    return "/" in text and Path(first).exists()


def _hub_cache_dir() -> str:
    """The hub cache as the environment says now (huggingface_hub's constants were read at its import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return hf_constants.HF_HUB_CACHE


def _in_hf_cache(repo_id: str) -> bool:
    return isinstance(try_to_load_from_cache(repo_id, "config.json", cache_dir=_hub_cache_dir()), str)


def _offline() -> bool:
    return any(os.environ.get(k, "").upper() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")) \
        or bool(hf_constants.HF_HUB_OFFLINE)


def _hub_host() -> tuple[str, int]:
    """(host, port) downloads go to first: the HTTPS proxy when one is set, else the hub endpoint."""
    for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if os.environ.get(k):
            u = urlparse(os.environ[k] if "://" in os.environ[k] else "http://" + os.environ[k])
            return u.hostname or "", u.port or 8080
    u = urlparse(os.environ.get("HF_ENDPOINT") or hf_constants.ENDPOINT)
    return u.hostname or "huggingface.co", u.port or (443 if u.scheme != "http" else 80)


def _hub_reachable(timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """A TCP connection to the hub (or proxy) within `timeout`; the name lookup is bounded too (in a thread:
    getaddrinfo takes no timeout)."""
    host, port = _hub_host()
    ok = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass
    t = threading.Thread(target=connect, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)
