"""Med-GRIT-270K-style converter on hand-written fixtures (tests/fixtures/med_grit); images are drawn here."""
import json
import shutil
from pathlib import Path

import pytest

from data_process import convert, med_grit
from medvl.schema import REGION_TAG, record_problems
from data_process.validate import validate_records
from tests.conftest import write_image
from medvl.loading import load_processor
from medvl.families import parse_boxes
from medvl.samples import IGNORE_INDEX

FIXTURES = Path(__file__).parent / "fixtures" / "med_grit"
W, H = 400, 300


@pytest.fixture
def data(tmp_path):
    imgs = tmp_path / "images"
    imgs.mkdir()
    for f in ("train.json", "test_RO.json"):
        shutil.copy(FIXTURES / f, tmp_path / f)
        for item in json.loads((FIXTURES / f).read_text()):
            if "id" in item and "Missing" not in item["id"]:
                write_image(imgs / f"{item['id']}.png", size=(W, H))
    return tmp_path


def test_tasks_boxes_and_accounting(data):
    recs, rep = med_grit.convert(data / "train.json", data / "images", show_progress=False)
    assert rep["read"] == 12 and rep["converted"] == 7
    assert rep["rejected"] == {"box_coordinate_outside_0_1000": ["medgrit-ct_06--Bad--2"],
                               "degenerate_box": ["medgrit-pet_05--Bad--1"], "duplicate_row": ["medgrit-fundus_03--IDRiD--12"],
                               "image_not_found": ["medgrit-ct_07--Missing--3"], "item_without_id": ["train.json#8"]}
    assert all(record_problems(r) == [] for r in recs)
    by = {r["id"]: r for r in recs}
    assert {r["id"]: r["meta"]["task"] for r in recs} == {
        "medgrit-ct_00--AbdomenCT--case1_slice12": "grounding", "medgrit-mr_01--BraTS--case7-t0": "region_classification",
        "medgrit-mr_01--BraTS--case7-t1": "region_caption", "medgrit-x_02--ChestXray--p3": "region_caption",
        "medgrit-fundus_03--IDRiD--12": "vqa", "medgrit-ultrasound_04--BUSI--9": "grounding",
        "medgrit-endoscopy_08--Kvasir--5": "region_classification"}
    vg = by["medgrit-ct_00--AbdomenCT--case1_slice12"]
    assert vg["conversations"][0]["value"] == "<image>\nWhere is the liver in this image?"  # <img> tag dropped
    assert vg["conversations"][1]["value"] == "liver" and vg["meta"]["modality"] == "CT"
    assert vg["meta"]["boxes"] == [{"label": "liver", "xyxy": [40.0, 60.0, 200.0, 180.0], "image_size": [W, H]}]
    ro = by["medgrit-mr_01--BraTS--case7-t0"]
    assert ro["conversations"][0]["value"] == f"<image>\nWhat is the object in {REGION_TAG}?"
    assert ro["meta"]["boxes"][0]["xyxy"] == [100.0, 75.0, 300.0, 225.0] and ro["meta"]["question_type"] == "RO"
    gc = by["medgrit-mr_01--BraTS--case7-t1"]
    assert gc["conversations"][0]["value"] == f"<image>\nDescribe this region {REGION_TAG} in detail."
    inline = by["medgrit-x_02--ChestXray--p3"]
    assert inline["conversations"][1]["value"] == f"A chest X-ray with an opacity {REGION_TAG} in the right lung."
    assert inline["meta"]["boxes"][0]["label"] == "lesion"
    brace = by["medgrit-ultrasound_04--BUSI--9"]
    assert brace["meta"]["boxes"][0]["xyxy"] == [40.0, 45.0, 120.0, 105.0]
    assert by["medgrit-fundus_03--IDRiD--12"]["meta"]["boxes"] == []


def test_task_from_file_name_wins(data):
    write_image(data / "outside.png")
    recs, rep = med_grit.convert(data / "test_RO.json", data / "images", show_progress=False)
    assert rep["converted"] == 2 and {r["meta"]["task"] for r in recs} == {"region_classification"}
    assert rep["rejected"] == {"image_outside_root": ["medgrit-ct_12--Outside--1"]}  # "../outside.png" leaves the root
    assert all(r["meta"]["split"] == "test" for r in recs)
    assert recs[1]["meta"]["boxes"][0]["xyxy"] == [0.0, 0.0, 200.0, 300.0]  # brace form, 0-1000 -> pixels


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_every_record_encodes_and_grounding_parses_back(family, data, tiny_models):
    recs, _ = med_grit.convert([data / "train.json", data / "test_RO.json"], data / "images", split="train",
                               show_progress=False)
    assert len(recs) == 9
    proc = load_processor(str(tiny_models[family]), max_len=1024)
    kept, rep = validate_records(recs, proc, progress=False)
    assert len(kept) == len(recs), rep.summary()
    vg = next(r for r in recs if r["id"] == "medgrit-ct_00--AbdomenCT--case1_slice12")
    enc = proc.encode(vg)
    answer = proc.tokenizer.decode([t for t in enc.labels if t != IGNORE_INDEX])
    (label, box), = parse_boxes(proc.family, answer, enc.image_sizes[0], enc.input_sizes[0])
    assert label == "liver"
    assert all(abs(a - b) <= 2.0 for a, b in zip(box, [40, 60, 200, 180])), (answer, box)


def test_cli_through_the_dispatcher(data, capsys):
    out = data / "o" / "mg.json"
    assert convert.main(["med_grit", "--input", str(data / "train.json"), "--image_root", str(data / "images"),
                         "--out", str(out), "--no_progress"]) == 0
    assert len(json.loads(out.read_text())) == 7
    assert json.loads((data / "o" / "mg.report.json").read_text())["n_rejected"] == 5
    assert "med_grit: read 12, converted 7, rejected 5" in capsys.readouterr().out
