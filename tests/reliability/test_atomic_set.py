"""#17.9: data_trans' three files are one set. A data_trans child process is paused at each step of its write
(a monkeypatched os.replace / os.fsync) and SIGKILLed there; what the readers eval uses then see is the old complete
set, the new complete set, or a one-line refusal naming the manifest -- never a new test.json beside an old
type_mapping.json. Leftover temp files of the killed write are removed by the next run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_process import data_trans
from medvl.jsonio import DataError, read_records, write_json
from medvl.schema import make_record
from eval.evaluate import load_type_mapping

ROOT = Path(__file__).resolve().parents[2]

# the child: data_trans.main with one call paused (marker file written, then sleep until killed)
CHILD = r"""
import os, sys, time
stage, marker = sys.argv[1], sys.argv[2]
real_replace, real_fsync = os.replace, os.fsync

def pause():
    open(marker, "w").close()
    time.sleep(120)

def replace(src, dst, *a, **k):
    if stage == "replace:" + os.path.basename(dst):
        pause()
    return real_replace(src, dst, *a, **k)

def fsync(fd):
    if stage == "fsync":
        pause()
    return real_fsync(fd)

os.replace, os.fsync = replace, fsync
from data_process import data_trans
sys.exit(data_trans.main(sys.argv[3:]))
"""

STAGES = ["fsync", "replace:set.manifest.json", "replace:test.json", "replace:type_mapping.json",
          "replace:categories.json"]


def _records(prefix: str, n: int) -> list[dict]:
    return [make_record(f"{prefix}-{i}", None, f"Is finding {i} present?", "yes" if i % 2 else "no",
                        {"dataset": "vqa_rad", "split": "test", "answer_type": "closed"}) for i in range(n)]


def _seen(out: Path):
    """(test ids, mapping ids) as eval's readers get them, or the refusal message."""
    try:
        ids = [r["id"] for r in read_records(out / "test.json")]
        mapping = sorted(load_type_mapping(out / "type_mapping.json"))
        return sorted(ids), mapping
    except DataError as e:
        return str(e)


@pytest.fixture
def sets(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    write_json(old, _records("old", 3))
    write_json(new, _records("new", 4))
    return tmp_path, old, new


@pytest.mark.parametrize("stage", STAGES)
def test_a_kill_leaves_the_old_set_the_new_set_or_a_named_refusal(sets, stage):
    tmp, old, new = sets
    out = tmp / "eval"
    assert data_trans.main(["--inputs", str(old), "--out_dir", str(out)]) == 0
    old_seen = _seen(out)
    assert old_seen == ([f"old-{i}" for i in range(3)],) * 2
    marker = tmp / "paused"
    child = subprocess.Popen([sys.executable, "-c", CHILD, stage, str(marker), "--inputs", str(new), "--out_dir",
                              str(out)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"the write never reached {stage}: {child.stderr.read().decode()[-2000:]}"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    seen = _seen(out)
    new_seen = ([f"new-{i}" for i in range(4)],) * 2
    if isinstance(seen, str):  # refused: one line naming the set's manifest
        assert "set.manifest.json" in seen and "rerun" in seen and "\n" not in seen
    else:
        assert seen in (old_seen, new_seen), f"a mix after a kill at {stage}: {seen}"
    if stage == "fsync":  # killed while the first file was staged: nothing replaced yet
        assert seen == old_seen and list(out.glob(".*.tmp"))
    # the next run completes, removes what the killed one left and gives the new set
    assert data_trans.main(["--inputs", str(new), "--out_dir", str(out)]) == 0
    assert _seen(out) == new_seen and not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_a_file_changed_after_the_write_is_refused(sets):
    tmp, old, _ = sets
    out = tmp / "eval"
    assert data_trans.main(["--inputs", str(old), "--out_dir", str(out)]) == 0
    mapping = json.loads((out / "type_mapping.json").read_text())
    mapping["old-0"]["answer_type"] = "open"
    (out / "type_mapping.json").write_text(json.dumps(mapping))
    with pytest.raises(DataError, match=r"test.json: type_mapping.json in .* not the file\(s\) set.manifest.json lists"):
        read_records(out / "test.json")
