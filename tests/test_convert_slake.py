"""SLAKE converter: the real 24-image sample (../shared/data/slake_sample) and hand-made boxes / bad rows."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from PIL import Image

from data_process import slake
from medvl.jsonio import DataError
from medvl.schema import record_problems
from tests.conftest import write_image


def _accounted(report):
    rejected = sum(len(v) for v in report["rejected"].values())
    assert report["read"] == report["converted"] + rejected + sum(report["skipped"].values())


@pytest.fixture(scope="module")
def sample(shared_data):
    return shared_data / "slake_sample"


def test_sample_languages_and_fields(sample):
    rows = json.loads((sample / "train.json").read_text())
    n_lang = Counter(r["q_lang"] for r in rows)
    for lang, expected in (("en", n_lang["en"]), ("zh", n_lang["zh"]), ("all", len(rows))):
        records, report = slake.convert(sample / "train.json", sample / "imgs", lang=lang, show_progress=False)
        assert len(records) == report["converted"] == expected and report["rejected"] == {}
        _accounted(report)
    assert n_lang == {"en": 201, "zh": 155}
    records, report = slake.convert(sample / "train.json", sample / "imgs", show_progress=False)
    assert report["skipped"] == {"q_lang_zh": 155}
    assert all(record_problems(r) == [] for r in records)
    meta = records[0]["meta"]
    assert meta["split"] == "train" and meta["q_lang"] == "en"
    for key in ("content_type", "base_type", "location", "modality", "triple"):
        assert key in meta
    # CLOSED is not yes/no: choice questions stay closed with their organ answer
    choice = [r for r in records if r["meta"]["answer_type"] == "closed"
              and r["conversations"][1]["value"].lower() not in ("yes", "no")]
    assert choice and any(r["conversations"][1]["value"] == "Liver" for r in choice)


def test_sample_boxes_are_xyxy_inside_the_image(sample):
    records, report = slake.convert(sample / "train.json", sample / "imgs", lang="all", show_progress=False)
    boxed = [r for r in records if r["meta"]["boxes"]]
    assert len({r["image"] for r in boxed}) == 15  # 15 of the 24 images have boxes
    assert report["boxes"]["read"] == report["boxes"]["kept"] == 17 and report["boxes"]["rejected"] == {}
    for r in boxed:
        w, h = Image.open(r["image"]).size
        for b in r["meta"]["boxes"]:
            x1, y1, x2, y2 = b["xyxy"]
            assert b["image_size"] == [w, h] and 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    # one box by hand: xmlab1/detection.json is [{"Liver": [54, 106, 30, 31]}] (x, y top-left, w, h) on a 256x256 image
    assert json.loads((sample / "imgs/xmlab1/detection.json").read_text()) == [{"Liver": [54.0, 106.0, 30.0, 31.0]}]
    liver = next(r for r in records if r["image"].endswith("xmlab1/source.jpg"))["meta"]["boxes"]
    assert liver == [{"label": "Liver", "xyxy": [54, 106, 84, 137], "image_size": [256, 256]}]
    two = next(r for r in records if r["image"].endswith("xmlab11/source.jpg"))["meta"]["boxes"]
    assert [b["label"] for b in two] == ["Liver", "Spleen"] and two[1]["xyxy"] == [190, 175, 265, 244]


# ------------------------------------------------------------------------------------------ hand-made inputs

def _row(qid, img="xmlab1/source.jpg", lang="en", **kw):
    row = {"img_id": 1, "img_name": img, "question": f"Does the picture contain liver {qid}?", "answer": "Yes",
           "q_lang": lang, "location": "Abdomen", "modality": "CT", "answer_type": "CLOSED", "base_type": "vqa",
           "content_type": "Organ", "triple": ["vhead", "_", "_"], "qid": qid}
    row.update(kw)
    return row


@pytest.fixture
def mini(tmp_path):
    imgs = tmp_path / "imgs"
    (imgs / "xmlab1").mkdir(parents=True)
    write_image(imgs / "xmlab1" / "source.jpg", size=(100, 80))
    boxes = [{"Liver": [10, 10, 20, 20]}, {"Edge": [80.5, 60, 20.3, 20]},  # x2 = 100.8: within 1 px -> clipped
             {"Far": [90, 10, 20, 10]},  # x2 = 110: outside -> rejected
             {"Flat": [5, 5, 0, 10]}, {"Text": "oops"}]
    (imgs / "xmlab1" / "detection.json").write_text(json.dumps(boxes))
    return tmp_path, imgs


def test_boxes_clipped_or_rejected_and_counted(mini):
    tmp, imgs = mini
    (tmp / "test.json").write_text(json.dumps([_row(1), _row(2)]))
    records, report = slake.convert(tmp / "test.json", imgs, show_progress=False)
    assert [r["meta"]["split"] for r in records] == ["test", "test"]
    boxes = records[0]["meta"]["boxes"]
    assert boxes == [{"label": "Liver", "xyxy": [10, 10, 30, 30], "image_size": [100, 80]},
                     {"label": "Edge", "xyxy": [80.5, 60, 100, 80], "image_size": [100, 80]}]
    assert records[1]["meta"]["boxes"] == boxes and records[1]["meta"]["boxes"] is not boxes
    assert report["boxes"] == {"images_with_boxes": 1, "read": 5, "kept": 2, "clipped": 1,
                               "rejected": {"box_outside_image": ["xmlab1:Far"], "box_non_positive_size": ["xmlab1:Flat"],
                                            "box_not_4_numbers": ["xmlab1:Text"]}}
    assert all(record_problems(r) == [] for r in records)


def test_bad_rows_rejected_and_fatal_problems_raise(mini):
    tmp, imgs = mini
    rows = [_row(1), _row(2, img="xmlab9/source.jpg"), _row(3, answer_type="SOMETIMES"), _row(4, lang="zh"),
            _row(5, lang="fr"), _row(6, question=""), _row(1)]
    (tmp / "validate.json").write_text(json.dumps(rows))
    records, report = slake.convert(tmp / "validate.json", imgs, show_progress=False)
    assert [r["id"] for r in records] == ["slake-1"] and records[0]["meta"]["split"] == "val"
    assert report["rejected"] == {"image_not_found": ["slake-2"], "unknown_answer_type": ["slake-3"],
                                  "unknown_q_lang": ["slake-5"], "empty_question": ["slake-6"],
                                  "duplicate_row": ["slake-1"]}
    assert report["skipped"] == {"q_lang_zh": 1}
    _accounted(report)

    (imgs / "xmlab1" / "detection.json").write_text('[{"Liver": [1, 2, 3')
    with pytest.raises(DataError, match="detection.json"):
        slake.convert(tmp / "validate.json", imgs, show_progress=False)
    (imgs / "xmlab1" / "detection.json").write_text('{"Liver": [1, 2, 3, 4]}')
    with pytest.raises(DataError, match="detection.json.*list"):
        slake.convert(tmp / "validate.json", imgs, show_progress=False)
    with pytest.raises(DataError, match="not found"):
        slake.convert(tmp / "missing.json", imgs)
    (tmp / "test.json").write_text('[{"qid": 1}')
    with pytest.raises(DataError, match="test.json: malformed JSON"):
        slake.convert(tmp / "test.json", imgs)
    with pytest.raises(DataError, match="--lang"):
        slake.convert(tmp / "validate.json", imgs, lang="de")


def test_missing_detection_json_means_no_boxes(mini):
    tmp, imgs = mini
    (imgs / "xmlab1" / "detection.json").unlink()
    (tmp / "train.json").write_text(json.dumps([_row(1)]))
    records, report = slake.convert(tmp / "train.json", imgs, show_progress=False)
    assert records[0]["meta"]["boxes"] == [] and report["boxes"]["images_without_detection_json"] == 1
