"""MedPix-ShortQA converter on hand-made parquet shards with the columns its dataset card declares."""
from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_process import medpix
from medvl.jsonio import DataError
from medvl.schema import record_problems

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), color).save(buf, format="PNG")
    return buf.getvalue()


def shard(path, rows):
    cols = ["image_id", "case_id", "question", "answer", "ans_len", "mode", "split"]
    data = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    data["image_id"] = pa.array(data["image_id"], type=IMAGE_TYPE)
    data["ans_len"] = pa.array(data["ans_len"], type=pa.int32())
    pq.write_table(pa.table(data), path)


@pytest.fixture
def hub(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    img = {"bytes": png((10, 10, 200)), "path": "MPX1234_synpic1.png"}
    shard(d / "Test-00000-of-00001-abc.parquet", [
        (img, "MPX1234", "Is there a mass in the liver?", "Yes", 1, "CT", "Test"),
        (img, "MPX1234", "Is the lesion hypodense or hyperdense?", "Hypodense", 1, "CT", "Test"),
        (img, "MPX1234", "What is the diagnosis?", "Hepatic adenoma", 2, "CT", "Test"),
        (img, "MPX1234", "What is the diagnosis?", "x", 1, "CT", "Holdout"),
    ])
    shard(d / "Train-00000-of-00001-def.parquet", [
        ({"bytes": png((0, 0, 0)), "path": None}, "MPX9", "Which side is affected?", "Left", 1, "MR", "Train"),
        ({"bytes": None, "path": None}, "MPX9", "What is shown?", "edema", 1, "MR", "Train"),
    ])
    return tmp_path, d


def test_shards_convert_with_split_column(hub):
    tmp, d = hub
    records, report = medpix.convert(d, tmp / "img", show_progress=False)
    assert report["read"] == 6 and report["converted"] == 4
    assert report["rejected"] == {"unknown_split_value": ["Test-00000-of-00001-abc.parquet#3"],
                                  "no_image": ["medpix-train-1"]}
    assert [r["id"] for r in records] == ["medpix-test-0", "medpix-test-1", "medpix-test-2", "medpix-train-0"]
    assert [r["meta"]["answer_type"] for r in records] == ["closed", "closed", "open", "open"]
    assert records[0]["meta"]["case_id"] == "MPX1234" and records[0]["meta"]["mode"] == "CT"
    assert records[0]["meta"]["modality"] is None  # `mode` is undocumented: not read as a modality
    assert len({r["image"] for r in records[:3]}) == 1 and report["notes"]["images_written"] == 2
    assert all(record_problems(r) == [] for r in records)


def test_split_filter_skips_other_splits(hub):
    tmp, d = hub
    records, report = medpix.convert(d, tmp / "img", split="test", show_progress=False)
    assert [r["meta"]["split"] for r in records] == ["test"] * 3
    assert report["skipped"] == {"split_train": 2}
    rejected = sum(len(v) for v in report["rejected"].values())
    assert report["read"] == report["converted"] + rejected + sum(report["skipped"].values())


def test_image_column_alias_and_missing_columns(tmp_path):
    rows = [{"image": {"bytes": None, "path": "x.png"}, "question": "Is it?", "answer": "no", "split": "Valid"}]
    (tmp_path / "v.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    records, _ = medpix.convert(tmp_path / "v.jsonl", tmp_path / "img", image_root=tmp_path, show_progress=False)
    assert records[0]["id"] == "medpix-val-0" and records[0]["image"] == str((tmp_path / "x.png").resolve())
    (tmp_path / "w.jsonl").write_text(json.dumps({"img": "x.png", "question": "q", "answer": "a"}) + "\n")
    with pytest.raises(DataError, match=r"w.jsonl: row 0 has no image column"):
        medpix.convert(tmp_path / "w.jsonl", tmp_path / "img", split="test")
    # a broken .jsonl line is one bad row: rejected by line number, the rest converts (issue 9)
    (tmp_path / "x.jsonl").write_text('{"image": "x.png", "question": "q", "answer": "a"}\n{"image": "x.png",\n')
    _, report = medpix.convert(tmp_path / "x.jsonl", tmp_path / "img", split="test", image_root=tmp_path)
    assert report["read"] == 2 and report["rejected"] == {"malformed_json": ["x.jsonl:line 2"]}
    with pytest.raises(DataError, match="not found"):
        medpix.convert(tmp_path / "Train.parquet", tmp_path / "img")
    pq.write_table(pa.table({"image_id": pa.array([None], type=IMAGE_TYPE), "answer": ["a"]}), tmp_path / "Test.parquet")
    with pytest.raises(DataError, match=r"missing column\(s\) \['question'\]"):
        medpix.convert(tmp_path / "Test.parquet", tmp_path / "img")
