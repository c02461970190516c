"""LLaVA-Med converter on hand-written alignment / instruct files in the released LLaVA-style layout."""
from __future__ import annotations

import json

import pytest

from data_process import llava_med
from medvl.jsonio import DataError
from medvl.schema import record_problems
from tests.conftest import write_image


def turn(who, text):
    return {"from": who, "value": text}


def _accounted(report):
    rejected = sum(len(v) for v in report["rejected"].values())
    assert report["read"] == report["converted"] + rejected + sum(report["skipped"].values())


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for name in ("PMC1_F1.jpg", "PMC2_F2.jpg"):
        write_image(root / name, size=(16, 16))
    return root


def test_alignment(tmp_path, images):
    rows = [{"id": "PMC1_F1", "image": "PMC1_F1.jpg",
             "conversations": [turn("human", "Describe the image concisely.\n<image>"), turn("gpt", "Axial CT of the abdomen.")]},
            {"id": "PMC2_F2", "image": "PMC2_F2.jpg",
             "conversations": [turn("human", "<image>\nWhat is shown?"), turn("gpt", "A"), turn("human", "More?"),
                               turn("gpt", "B")]},
            {"id": "PMC3_F3", "image": "PMC3_F3.jpg",
             "conversations": [turn("human", "<image>\nWhat is shown?"), turn("gpt", "C")]}]
    src = tmp_path / "llava_med_alignment_500k.json"
    src.write_text(json.dumps(rows))
    records, report = llava_med.convert(src, images, show_progress=False)
    assert [r["id"] for r in records] == ["PMC1_F1"]
    assert report["rejected"] == {"alignment_not_single_turn": ["PMC2_F2"], "image_not_found": ["PMC3_F3"]}
    rec = records[0]
    assert rec["conversations"][0]["value"] == "<image>\nDescribe the image concisely."  # tag moved to the front
    assert rec["image"] == str((images / "PMC1_F1.jpg").resolve())
    assert rec["meta"]["question_type"] == "caption" and rec["meta"]["answer_type"] == "open"
    assert rec["meta"]["split"] == "train" and record_problems(rec) == []
    _accounted(report)


def test_instruct_multiturn_and_bad_rows(tmp_path, images):
    good = {"id": "PMC2_F2", "image": "PMC2_F2.jpg",
            "domain": {"chest_xray": False, "mri": True, "histology": False, "gross": False, "ct_scan": False},
            "conversations": [turn("human", "<image>\nWhat is seen?"), turn("gpt", "A lesion."),
                              turn("user", "Where?"), turn("assistant", "Left frontal lobe.")]}
    no_tag = {"id": "n1", "image": "PMC1_F1.jpg", "conversations": [turn("human", "What?"), turn("gpt", "X")]}
    rows = [good, no_tag,
            {"image": "PMC1_F1.jpg", "conversations": [turn("human", "<image>\nQ"), turn("gpt", "A")]},
            {"id": "b1", "image": "PMC1_F1.jpg", "conversations": [turn("human", "<image>\nQ"), turn("human", "Q2")]},
            {"id": "b2", "image": "PMC1_F1.jpg", "conversations": [turn("human", "<image>\nQ")]},
            {"id": "b3", "image": "PMC1_F1.jpg", "conversations": [turn("human", "<image>\nQ"), turn("gpt", " ")]},
            {"id": "b4", "image": "PMC1_F1.jpg", "conversations": [turn("human", "Q"), turn("gpt", "A"),
                                                                  turn("human", "<image>\nQ2"), turn("gpt", "B")]},
            {"id": "b5", "image": "PMC1_F1.jpg", "conversations": [turn("human", "<image><image>\nQ"), turn("gpt", "A")]},
            {"id": "b6", "image": "PMC1_F1.jpg", "conversations": [turn("robot", "Q"), turn("gpt", "A")]},
            {"id": "b7", "image": "PMC1_F1.jpg"},
            {"id": "b8", "image": 7, "conversations": [turn("human", "Q"), turn("gpt", "A")]},
            dict(good)]
    src = tmp_path / "llava_med_instruct_10k.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, report = llava_med.convert(src, images, show_progress=False)
    assert [r["id"] for r in records] == ["PMC2_F2", "n1"]
    assert report["rejected"] == {
        "missing_id": ["llava_med_instruct_10k.jsonl#2"], "turns_not_alternating": ["b1"], "last_turn_not_answer": ["b2"],
        "empty_answer": ["b3"], "image_tag_outside_first_turn": ["b4"], "more_image_tags_than_images": ["b5"],
        "bad_turn": ["b6"], "missing_conversations": ["b7"], "bad_image_field": ["b8"], "duplicate_row": ["PMC2_F2"]}
    _accounted(report)
    multi = records[0]
    assert [t["from"] for t in multi["conversations"]] == ["human", "gpt", "human", "gpt"]  # all turns kept
    assert multi["meta"]["question_type"] == "conversation" and multi["meta"]["modality"] == "MRI"
    assert records[1]["conversations"][0]["value"] == "<image>\nWhat?" and report["notes"]["image_tag_added"] == 1
    assert all(record_problems(r) == [] for r in records)


def test_kind_needed_when_the_name_does_not_say(tmp_path, images):
    src = tmp_path / "pmc_subset.json"
    src.write_text(json.dumps([{"id": "x", "image": "PMC1_F1.jpg",
                                "conversations": [turn("human", "<image>\nQ"), turn("gpt", "A")]}]))
    with pytest.raises(DataError, match="--kind"):
        llava_med.convert(src, images)
    records, _ = llava_med.convert(src, images, kind="alignment", split="val", show_progress=False)
    assert records[0]["meta"]["kind"] == "alignment" and records[0]["meta"]["split"] == "val"
    with pytest.raises(DataError, match="not found"):
        llava_med.convert(tmp_path / "llava_med_instruct_10k.json", images)
    (tmp_path / "llava_med_instruct_60k.json").write_text('{"id": "x"}')
    with pytest.raises(DataError, match="expected a JSON list"):
        llava_med.convert(tmp_path / "llava_med_instruct_60k.json", images)
