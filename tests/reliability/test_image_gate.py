"""Image files are refused by size before they are opened (medvl.paths.check_file_size, --max_image_bytes).

A 2 GB sparse file behind a valid JPEG header took PIL 446 s to reject (it decodes through the zeros). Validation
and the converter must refuse it in well under a second, naming the size, and the cap is configurable.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_image

ROOT = Path(__file__).resolve().parents[2]
SPARSE_BYTES = 2 << 30


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    write_image(root / "ok.jpg", size=(40, 30))
    big = root / "huge.jpg"
    write_image(big, size=(40, 30), seed=3)
    head = big.read_bytes()
    with open(big, "wb") as f:  # a real JPEG header up to its scan, then 2 GB of holes (sparse: no disk used)
        f.write(head[:head.index(b"\xff\xda")])  # PIL's open scans the zeros for the next marker: ~45 s/GB
        f.truncate(SPARSE_BYTES)
    return root


def _row(rid, image):
    return {"id": rid, "image": image, "conversations": [{"from": "human", "value": "<image>\nIs it?"},
                                                         {"from": "gpt", "value": "yes"}]}


def test_validate_refuses_a_huge_file_in_milliseconds(images, tiny_models, tmp_path):
    """Timed in a child process (the pre-fix code spends minutes here): only the record's validation is timed."""
    code = ("import sys, time, json\n"
            "from data_process.validate import validate_records\nfrom medvl.loading import load_processor\n"
            f"proc = load_processor({str(tiny_models['qwen2_vl'])!r}, image_root={str(images)!r}, max_len=512)\n"
            f"recs = [{_row('huge', 'huge.jpg')!r}, {_row('ok', 'ok.jpg')!r}]\n"
            "t = time.perf_counter(); kept, rep = validate_records(recs, proc, progress=False)\n"
            "print(json.dumps({'s': time.perf_counter() - t, 'kept': [r['id'] for r in kept],\n"
            "                  'rejected': dict(rep.rejected), 'details': rep.details}))\n")
    try:
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("validation of one 2 GB sparse JPEG did not finish in 60 s")
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["s"] < 1.0, got
    assert got["kept"] == ["ok"] and got["rejected"] == {"image_file_too_large": ["huge"]}
    assert f"{SPARSE_BYTES} bytes > {64 << 20}" in got["details"]["huge"]


def test_max_image_bytes_is_configurable(images, tiny_models, tmp_path):
    from data_process import validate

    data = tmp_path / "recs.jsonl"
    data.write_text(json.dumps(_row("ok", "ok.jpg")) + "\n")
    size = (images / "ok.jpg").stat().st_size
    out = tmp_path / "clean.jsonl"
    validate.main(["--model", str(tiny_models["qwen2_vl"]), "--data", str(data), "--out", str(out),
                   "--image_root", str(images), "--max_image_bytes", str(size - 1), "--no_progress"])
    rep = json.loads(Path(out).with_name(Path(out).stem + ".report.json").read_text())
    assert rep["kept"] == 0 and rep["rejected_by_reason"] == {"image_file_too_large": {"count": 1, "ids": ["ok"]}}
    assert f"{size} bytes > {size - 1}" in rep["details"]["ok"]


def test_converter_refuses_a_huge_file(images, tmp_path):
    from data_process import llava_med

    raw = tmp_path / "instruct.jsonl"
    raw.write_text(json.dumps(_row("huge", "huge.jpg")) + "\n" + json.dumps(_row("ok", "ok.jpg")) + "\n")
    t = time.perf_counter()
    rows, rep = llava_med.convert(raw, images, kind="instruct", show_progress=False)
    assert time.perf_counter() - t < 1.0
    assert [r["id"] for r in rows] == ["ok"] and rep["rejected"] == {"image_file_too_large": ["huge"]}


def test_load_image_names_the_size(images):
    from medvl.images import load_image
    from medvl.samples import SampleError

    t = time.perf_counter()
    with pytest.raises(SampleError) as e:
        load_image(images / "huge.jpg", "huge")
    assert time.perf_counter() - t < 1.0
    assert e.value.reason == "image_file_too_large" and f"{SPARSE_BYTES} bytes" in str(e.value)
    assert load_image(images / "ok.jpg", "ok").size == (40, 30)
