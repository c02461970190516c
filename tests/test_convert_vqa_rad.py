"""VQA-RAD converter: the real OSF and MEVF files (../shared/data), and hand-made bad inputs."""
from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from data_process import vqa_rad
from medvl.jsonio import DataError
from medvl.schema import record_problems
from tests.conftest import write_image


def _rejected(report):
    return sum(len(v) for v in report["rejected"].values())


def _accounted(report):
    assert report["read"] == report["converted"] + _rejected(report) + sum(report["skipped"].values())


@pytest.fixture(scope="module")
def rad(shared_data):
    root = shared_data / "vqa_rad"
    return root, root / "VQA_RAD Image Folder"


def test_osf_release_converts_every_row(rad):
    root, images = rad
    records, report = vqa_rad.convert(root / "VQA_RAD Dataset Public.json", images, show_progress=False)
    assert report["read"] == report["converted"] == len(records) == 2248
    assert report["rejected"] == {} and report["skipped"] == {}
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids) and "vqarad-0" in ids  # the one str qid "0" gives the same form
    assert all(os.path.isabs(r["image"]) and os.path.isfile(r["image"]) for r in records)
    assert all(record_problems(r) == [] for r in records)
    assert Counter(r["meta"]["split"] for r in records) == {"train": 1797, "test": 451}
    by_qid = {r["meta"]["qid"]: r["meta"] for r in records}
    assert by_qid[2156]["answer_type"] == "closed"  # released as "CLOSED " with a trailing space
    types = {r["meta"]["question_type_raw"]: r["meta"]["question_type"] for r in records}
    assert types["ATRIB"] == "ATTRIB" and types["PRSE"] == "PRES" and types["Other"] == "OTHER"
    assert types["POS, PRES"] == types["PRES, POS"] == "PRES, POS"
    assert {t for r in records for t in r["meta"]["question_types"]} <= set(vqa_rad.QUESTION_TYPES)
    assert {r["meta"]["organ"] for r in records} == {"head", "chest", "abdomen"}


def test_osf_split_filter_is_counted_as_skipped(rad):
    root, images = rad
    records, report = vqa_rad.convert(root / "VQA_RAD Dataset Public.json", images, split="test", show_progress=False)
    assert len(records) == 451 and report["skipped"] == {"split_train": 1797}
    _accounted(report)


def test_mevf_split_counts(rad):
    root, images = rad
    records, report = vqa_rad.convert([root / "mevf_trainset.json", root / "mevf_testset.json"], images,
                                      show_progress=False)
    assert report["converted"] == 3064 + 451 and _rejected(report) == 0
    test = [r for r in records if r["meta"]["split"] == "test"]
    assert len(test) == 451
    assert Counter(r["meta"]["answer_type"] for r in test) == {"closed": 272, "open": 179}
    assert all(r["id"].startswith("vqarad-mevf-") for r in records)
    assert len({r["id"] for r in records}) == len(records)
    assert all(os.path.isfile(r["image"]) for r in records)
    # integer answers (counts) become text
    assert any(r["conversations"][1]["value"] == "4" for r in records)


# ------------------------------------------------------------------------------------------ hand-made inputs

def _row(qid, image="img1.jpg", **kw):
    row = {"qid": qid, "image_name": image, "image_organ": "CHEST", "answer": "yes", "answer_type": "CLOSED",
           "question_type": "PRES", "question": f"Is there an effusion {qid}?", "phrase_type": "freeform"}
    row.update(kw)
    return row


@pytest.fixture
def mini(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "img1.jpg")
    return tmp_path, images


def test_bad_rows_are_rejected_with_their_ids(mini):
    tmp, images = mini
    rows = [_row(1), _row(2, image="missing.jpg"), _row(3, question_type="WHATEVER"), _row(4, answer_type="MAYBE"),
            _row(5, answer="  "), _row(1), _row(1, answer="no"), "not a row", _row(6, question_type="ATRIB, pres")]
    (tmp / "mevf_testset.json").write_text(json.dumps(rows))
    records, report = vqa_rad.convert(tmp / "mevf_testset.json", images, show_progress=False)
    assert report["rejected"] == {"image_not_found": ["vqarad-mevf-2"], "unknown_question_type": ["vqarad-mevf-3"],
                                  "unknown_answer_type": ["vqarad-mevf-4"], "empty_answer": ["vqarad-mevf-5"],
                                  "duplicate_row": ["vqarad-mevf-1"], "row_not_an_object": ["mevf_testset.json#7"]}
    assert report["details"]["vqarad-mevf-2"].endswith("missing.jpg")
    # same qid, other content: kept under a deterministic suffix
    assert [r["id"] for r in records] == ["vqarad-mevf-1", "vqarad-mevf-1-dup2", "vqarad-mevf-6"]
    assert report["notes"] == {"ids_disambiguated": 1}
    assert records[2]["meta"]["question_types"] == ["PRES", "ATTRIB"]
    _accounted(report)


def test_fatal_input_problems_raise(mini, tmp_path):
    tmp, images = mini
    with pytest.raises(DataError, match="not found"):
        vqa_rad.convert(tmp / "nope_testset.json", images)
    (tmp / "broken_testset.json").write_text('[{"qid": 1,,}]')
    with pytest.raises(DataError, match="broken_testset.json.*malformed JSON"):
        vqa_rad.convert(tmp / "broken_testset.json", images)
    (tmp / "mevf_rows.json").write_text(json.dumps([_row(1)]))
    with pytest.raises(DataError, match="split"):  # neither the name nor --split says the split
        vqa_rad.convert(tmp / "mevf_rows.json", images)
    records, _ = vqa_rad.convert(tmp / "mevf_rows.json", images, split="train", show_progress=False)
    assert records[0]["meta"]["split"] == "train"


def test_cli_writes_records_and_report(mini, capsys):
    tmp, images = mini
    (tmp / "mevf_testset.json").write_text(json.dumps([_row(1), _row(2, image="gone.jpg")]))
    out = tmp / "out" / "rad.json"
    assert vqa_rad.main(["--input", str(tmp / "mevf_testset.json"), "--image_root", str(images),
                         "--out", str(out), "--no_progress"]) == 0
    assert len(json.loads(out.read_text())) == 1
    report = json.loads((tmp / "out" / "rad.report.json").read_text())
    assert report["rejected"] == {"image_not_found": ["vqarad-mevf-2"]} and report["output"] == str(out.resolve())
    assert "rejected image_not_found: 1" in capsys.readouterr().out
