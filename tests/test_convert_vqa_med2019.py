"""VQA-Med 2019 converter on hand-written files in the released layouts (3- and 4-column `|` lines)."""
from __future__ import annotations

import json

import pytest

from data_process import vqa_med2019
from medvl.jsonio import DataError
from medvl.schema import record_problems
from tests.conftest import write_image


def _accounted(report):
    rejected = sum(len(v) for v in report["rejected"].values())
    assert report["read"] == report["converted"] + rejected + sum(report["skipped"].values())


@pytest.fixture
def release(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("synpic100", "synpic101", "synpic102"):
        write_image(images / f"{name}.jpg", size=(16, 16))
    return tmp_path, images


def test_test_file_four_columns(release):
    tmp, images = release
    (tmp / "VQAMed2019_Test_Questions_w_Ref_Answers.txt").write_text(
        "synpic100|modality|is \tthis a t1 weighted, t2 weighted, or flair image?|t2\n"
        "synpic101|abnormality|what is abnormal in the ct scan?|(angioinvasive aspergillosis with) septic emboli\n"
        "\n"
        "synpic102|abnormality|what is the primary abnormality?|anaplastic oligodendroglioma#multi-cystic mass\n"
        "synpic103|plane|in what plane is this?|axial\n"
        "synpic100|colour|what colour is it?|red\n"
        "synpic102|organ|is this image normal?|no\n")
    records, report = vqa_med2019.convert(tmp / "VQAMed2019_Test_Questions_w_Ref_Answers.txt", images,
                                          show_progress=False)
    assert report["read"] == 6 and report["converted"] == 4
    assert report["rejected"] == {"image_not_found": ["vqamed2019-test-synpic103-plane"],
                                  "unknown_category": ["vqamed2019-test-synpic100-colour"]}
    assert report["details"]["vqamed2019-test-synpic100-colour"].startswith(
        "VQAMed2019_Test_Questions_w_Ref_Answers.txt:6")
    _accounted(report)
    by_id = {r["id"]: r for r in records}
    t2 = by_id["vqamed2019-test-synpic100-modality"]
    assert t2["conversations"][0]["value"] == "<image>\nis this a t1 weighted, t2 weighted, or flair image?"
    assert t2["meta"]["answer_type"] == "closed" and t2["meta"]["category"] == "modality"  # a choice question
    opt = by_id["vqamed2019-test-synpic101-abnormality"]
    assert opt["conversations"][1]["value"] == "angioinvasive aspergillosis with septic emboli"
    assert opt["meta"]["answers"] == ["angioinvasive aspergillosis with septic emboli", "septic emboli"]
    assert opt["meta"]["answer_type"] == "open"
    alt = by_id["vqamed2019-test-synpic102-abnormality"]
    assert alt["meta"]["answers"] == ["anaplastic oligodendroglioma", "multi-cystic mass"]
    assert alt["meta"]["answer_raw"] == "anaplastic oligodendroglioma#multi-cystic mass"
    assert by_id["vqamed2019-test-synpic102-organ"]["meta"]["answer_type"] == "closed"
    assert all(record_problems(r) == [] and r["meta"]["split"] == "test" for r in records)


def test_three_columns_category_from_file_name(release):
    tmp, images = release
    cat = tmp / "QAPairsByCategory"
    cat.mkdir()
    (cat / "C1_Modality_train.txt").write_text("synpic100|what modality is shown?|xr - plain film\n"
                                               "synpic101|was gi contrast given to the patient?|no\n")
    (cat / "C2_Plane_train.txt").write_text("synpic100|which plane is the image shown in?|axial\n"
                                            "synpic100|which plane is the image shown in?|axial\n"  # repeated line
                                            "synpic100|in what plane is this image oriented?|coronal\n")
    (tmp / "All_QA_Pairs_train.txt").write_text("synpic102|what organ system is shown?|musculoskeletal\n")
    records, report = vqa_med2019.convert([cat, tmp / "All_QA_Pairs_train.txt"], images, show_progress=False)
    assert [r["id"] for r in records] == [
        "vqamed2019-train-synpic100-modality", "vqamed2019-train-synpic101-modality",
        "vqamed2019-train-synpic100-plane", "vqamed2019-train-synpic100-plane-dup2", "vqamed2019-train-synpic102-L1"]
    assert report["rejected"] == {"duplicate_row": ["vqamed2019-train-synpic100-plane"]}
    assert report["notes"] == {"ids_disambiguated": 1, "no_category": 1}
    assert records[-1]["meta"]["category"] is None
    assert {r["meta"]["split"] for r in records} == {"train"}
    _accounted(report)


def test_malformed_lines_raise_with_file_and_line(release):
    tmp, images = release
    bad = tmp / "C3_Organ_val.txt"
    bad.write_text("synpic100|what organ?|skull and contents\nsynpic101|what organ|is it?|spine\n")
    with pytest.raises(DataError, match=r"C3_Organ_val.txt: line 2 has 4 '\|'-separated columns, expected 3"):
        vqa_med2019.convert(bad, images)
    (tmp / "VQAMed2019_Test_Questions.txt").write_text("synpic100|what organ?\n")  # questions only: no answers
    with pytest.raises(DataError, match="line 1 has 2"):
        vqa_med2019.convert(tmp / "VQAMed2019_Test_Questions.txt", images)
    (tmp / "latin1_val.txt").write_bytes("synpic100|what?|caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin1_val.txt: not valid UTF-8"):
        vqa_med2019.convert(tmp / "latin1_val.txt", images)
    with pytest.raises(DataError, match="not found"):
        vqa_med2019.convert(tmp / "nothing_val.txt", images)


def test_cli(release):
    tmp, images = release
    (tmp / "C3_Organ_val.txt").write_text("synpic100|what organ?|skull and contents\n")
    out = tmp / "o.jsonl"
    assert vqa_med2019.main(["--input", str(tmp / "C3_Organ_val.txt"), "--image_root", str(images), "--out", str(out)]) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["vqamed2019-val-synpic100-organ"]
    assert json.loads((tmp / "o.report.json").read_text())["converted"] == 1
    assert vqa_med2019.main(["--input", str(tmp / "missing_val.txt"), "--image_root", str(images), "--out", str(out)]) == 2
