"""Shared fixtures: tiny config-built checkpoints (built once per session), the shared real data dir."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# validation verdicts are reused across runs (data_process/validation_cache.py): the suite keeps its own, per run
if "MEDVL_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["MEDVL_CACHE_DIR"] = tempfile.mkdtemp(prefix="medvl-validation-cache-")

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """{family: checkpoint dir}, built lazily per family."""
    from train.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    cache: dict[str, Path] = {}

    class _Lazy(dict):
        def __missing__(self, fam):
            self[fam] = build_tiny_model(fam, root / fam)
            return self[fam]
    return _Lazy(cache)


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA.resolve()


def write_image(path, size=(100, 120), mode="RGB", seed=0):
    from PIL import Image

    rng = np.random.RandomState(seed)
    arr = (rng.rand(size[1], size[0], 3) * 255).astype("uint8")
    Image.fromarray(arr).convert(mode).save(path)
    return str(path)


def qa_record(rid, image, question="Is there a lesion?", answer="yes", **meta):
    from medvl.schema import make_record

    return make_record(rid, image, question, answer, dict({"dataset": "test"}, **meta))
