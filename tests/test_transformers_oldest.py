"""The speed path (varlen attention, packing, chunked loss, vision cache) leans on transformers internals: the
attention registry, config._attn_implementation, forward signatures (docs/architecture.md lists them). They change
between releases, so its tests also run under the oldest supported transformers, 5.17 (the GPU image's), which
scripts/setup.sh installs into .deps/transformers517 beside the newest."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OLDEST = REPO / ".deps" / "transformers517"
SPEED_TESTS = ["tests/test_packing.py"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(OLDEST), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


@pytest.mark.skipif(not (OLDEST / "transformers" / "__init__.py").is_file(),
                    reason="transformers 5.17 not installed in .deps/transformers517 (bash scripts/setup.sh)")
def test_speed_path_tests_pass_under_transformers_5_17():
    version = subprocess.run([sys.executable, "-c", "import transformers; print(transformers.__version__)"],
                             env=_env(), cwd=REPO, capture_output=True, text=True)
    assert version.returncode == 0, version.stderr[-2000:]
    assert version.stdout.strip().startswith("5.17."), version.stdout  # the old one is the one imported
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SPEED_TESTS],
                         env=_env(), cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
