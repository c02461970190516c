"""The single dispatcher `python -m data_process.convert <dataset> ...`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from data_process import convert
from tests.conftest import write_image

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_dataset_with_examples():
    out = subprocess.run([sys.executable, "-m", "data_process.convert", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    for name in convert.CONVERTERS:
        assert name in out
    assert "examples:" in out and "data_process.data_trans" in out
    for name in convert.CONVERTERS:  # every sub-command builds its own help
        with pytest.raises(SystemExit) as e:
            convert.main([name, "--help"])
        assert e.value.code == 0


def test_dispatch_writes_output_and_report(tmp_path, capsys):
    write_image(tmp_path / "synpic1.jpg", size=(8, 8))
    src = tmp_path / "C4_Abnormality_test.txt"
    src.write_text("synpic1|is this image normal?|no\nsynpic2|is this image normal?|yes\n")
    out = tmp_path / "o" / "vqamed.json"
    rc = convert.main(["vqa_med2019", "--input", str(src), "--image_root", str(tmp_path), "--out", str(out)])
    assert rc == 0
    assert [r["id"] for r in json.loads(out.read_text())] == ["vqamed2019-test-synpic1-abnormality"]
    report = json.loads((tmp_path / "o" / "vqamed.report.json").read_text())
    assert (report["read"], report["converted"], report["rejected"]) == \
        (2, 1, {"image_not_found": ["vqamed2019-test-synpic2-abnormality"]})
    printed = capsys.readouterr().out
    assert "read 2, converted 1, rejected 1" in printed and "vqamed.report.json" in printed


def test_dispatch_errors(tmp_path, capsys):
    assert convert.main(["slake", "--input", str(tmp_path / "none.json"), "--image_root", str(tmp_path),
                         "--out", str(tmp_path / "x.json")]) == 2
    assert "none.json: file not found" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(SystemExit):  # --image_root is required where images are referenced by name
        convert.main(["vqa_rad", "--input", "a.json", "--out", "x.json"])
