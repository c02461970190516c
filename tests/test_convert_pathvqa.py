"""PathVQA converter on hand-made HF-style parquet/JSONL exports (image struct {bytes, path}, question, answer)."""
from __future__ import annotations

import base64
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_process import pathvqa
from medvl.jsonio import DataError
from medvl.schema import record_problems

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def image_bytes(color=(200, 30, 30), fmt="JPEG", size=(32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def write_parquet(path, rows):
    table = pa.table({"image": pa.array([r[0] for r in rows], type=IMAGE_TYPE),
                      "question": [r[1] for r in rows], "answer": [r[2] for r in rows]})
    pq.write_table(table, path)
    return path


def _accounted(report):
    rejected = sum(len(v) for v in report["rejected"].values())
    assert report["read"] == report["converted"] + rejected + sum(report["skipped"].values())


@pytest.fixture
def export(tmp_path):
    red, png = image_bytes(), image_bytes((0, 90, 0), "PNG")
    (tmp_path / "local").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "local" / "slide.jpg")
    data = tmp_path / "data"
    data.mkdir()
    write_parquet(data / "test-00000-of-00002.parquet", [
        ({"bytes": red, "path": "a.jpg"}, "Is this squamous epithelium?", "Yes"),
        ({"bytes": red, "path": "a.jpg"}, "What does this show?", "keratin pearls"),  # same image again
        ({"bytes": png, "path": None}, "Is there  necrosis?", "no"),
    ])
    write_parquet(data / "test-00001-of-00002.parquet", [
        ({"bytes": None, "path": "slide.jpg"}, "What stain is used?", "h&e"),  # path only, under --image_root
        ({"bytes": None, "path": "gone.jpg"}, "What organ?", "liver"),
        ({"bytes": b"not an image", "path": None}, "What cells?", "neutrophils"),
        (None, "Is this benign?", "yes"),
        ({"bytes": red, "path": None}, "What is shown?", ""),
    ])
    return tmp_path, data


def test_parquet_export(export):
    tmp, data = export
    records, report = pathvqa.convert(data, tmp / "images", image_root=tmp / "local", show_progress=False)
    assert report["read"] == 8 and report["converted"] == 4
    assert report["rejected"] == {"image_not_found": ["pathvqa-test-4"], "undecodable_image": ["pathvqa-test-5"],
                                  "no_image": ["pathvqa-test-6"], "empty_answer": ["pathvqa-test-7"]}
    _accounted(report)
    assert [r["id"] for r in records] == ["pathvqa-test-0", "pathvqa-test-1", "pathvqa-test-2", "pathvqa-test-3"]
    assert [r["meta"]["answer_type"] for r in records] == ["closed", "open", "closed", "open"]
    assert all(r["meta"]["split"] == "test" and r["meta"]["dataset"] == "pathvqa" for r in records)
    assert all(record_problems(r) == [] and os.path.isabs(r["image"]) for r in records)
    # embedded bytes: stored once per distinct image, with the format's extension, byte-identical
    assert records[0]["image"] == records[1]["image"] and records[0]["image"].endswith(".jpg")
    assert records[2]["image"].endswith(".png") and report["notes"]["images_written"] == 2
    assert open(records[0]["image"], "rb").read() == image_bytes()
    assert records[3]["image"] == str((tmp / "local" / "slide.jpg").resolve())
    assert records[2]["conversations"][0]["value"] == "<image>\nIs there necrosis?"


def test_jsonl_export_and_split(tmp_path):
    b64 = base64.b64encode(image_bytes()).decode()
    rows = [{"image": {"bytes": b64, "path": None}, "question": "Is it malignant?", "answer": "no"},
            {"image": "nowhere.png", "question": "What is it?", "answer": "a cyst"},
            {"image": 12, "question": "What is it?", "answer": "a cyst"}]
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="split"):
        pathvqa.convert(src, tmp_path / "img", image_root=tmp_path, show_progress=False)
    records, report = pathvqa.convert(src, tmp_path / "img", image_root=tmp_path, split="train", show_progress=False)
    assert [r["id"] for r in records] == ["pathvqa-train-0"]
    assert report["rejected"] == {"image_not_found": ["pathvqa-train-1"], "unsupported_image_value": ["pathvqa-train-2"]}


def test_fatal_input_problems(tmp_path):
    with pytest.raises(DataError, match="not found"):
        pathvqa.convert(tmp_path / "train.parquet", tmp_path / "img")
    pq.write_table(pa.table({"image": pa.array([None], type=IMAGE_TYPE), "question": ["q"]}), tmp_path / "train.parquet")
    with pytest.raises(DataError, match=r"train.parquet: missing column\(s\) \['answer'\]"):
        pathvqa.convert(tmp_path / "train.parquet", tmp_path / "img")
    # a broken .jsonl line is one bad row: rejected by line number, the rest converts (issue 9)
    (tmp_path / "train.jsonl").write_text('{"image": "a.jpg", "question": "q", "answer": "a"}\n{"image": \n')
    _, report = pathvqa.convert(tmp_path / "train.jsonl", tmp_path / "img", image_root=tmp_path)
    assert report["read"] == 2 and report["rejected"]["malformed_json"] == ["train.jsonl:line 2"]
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="bad.parquet: not a readable parquet"):
        pathvqa.convert(tmp_path / "bad.parquet", tmp_path / "img", split="train")


def test_cli_default_image_dir(export):
    tmp, data = export
    out = tmp / "out" / "pathvqa_test.json"
    assert pathvqa.main(["--input", str(data / "test-00000-of-00002.parquet"), "--out", str(out), "--no_progress"]) == 0
    records = json.loads(out.read_text())
    assert len(records) == 3 and all(r["image"].startswith(str((tmp / "out" / "images" / "pathvqa").resolve()))
                                     for r in records)
