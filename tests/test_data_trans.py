"""data_trans: the categorize rules (pure) and test.json / type_mapping.json from real converted data."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from data_process import data_trans, slake, vqa_rad
from data_process.data_trans import categorize
from medvl.jsonio import DataError, write_json
from medvl.schema import make_record


def rec(question, answer, answer_type="closed", dataset="vqa_rad", rid="r", **meta):
    return make_record(rid, "/img.jpg", question, answer, {"dataset": dataset, "answer_type": answer_type, **meta})


@pytest.mark.parametrize("record, expected", [
    (rec("Is there a fracture?", "Yes.", question_type="PRES"), "yes_no"),
    (rec("Is this an MRI or a CT scan?", "MRI", question_type="MODALITY"), "modality"),
    (rec("Was this taken with contrast or without?", "with", question_type="MODALITY"), "modality"),  # native only
    (rec("Is this a T1 weighted or FLAIR image?", "FLAIR", dataset="other"), "modality"),  # question words
    (rec("Is this a radiograph or a photograph?", "X-ray", dataset="other"), "modality"),  # answer is a technique
    (rec("Is the lesion on the left or right?", "Left", question_type="POS"), "position"),
    (rec("Are the opacities bilateral or unilateral?", "Bilateral", question_type="POS"), "position"),  # native only
    (rec("Which side is the effusion on, A or B?", "A", dataset="other"), "position"),  # question words
    (rec("Is the patient male or female?", "Female", question_type="OTHER"), "general"),
    (rec("Which is bigger, lung or heart?", "Lung", dataset="slake", content_type="Size"), "general"),
    (rec("图中肺和心脏哪个更大?", "是的", dataset="slake", content_type="Size"), "yes_no"),
    (rec("肝脏在哪里?", "左", dataset="slake", content_type="Position"), "position"),
    (rec("is this a t1 weighted, t2 weighted, or flair image?", "t2", dataset="vqa_med2019", category="modality"),
     "modality"),
    (rec("Is the nodule in the upper or lower lobe?", "upper", question_type="PRES, POS",
         question_types=["PRES", "POS"]), "position"),  # a VQA-RAD combination counts each part
])
def test_closed_types(record, expected):
    assert categorize(record)["closed_type"] == expected


def test_categorize_fields():
    open_rad = categorize(rec("What is abnormal?", "pneumonia", "open", question_type="ABN"))
    assert open_rad == {"answer_type": "open", "dataset": "vqa_rad", "question_type": "ABN"}
    assert categorize(rec("Is it big?", "no", dataset="slake", content_type="Size", question_type="Size")) == \
        {"answer_type": "closed", "closed_type": "yes_no", "dataset": "slake", "content_type": "Size"}
    assert categorize(rec("What plane?", "axial", "open", dataset="vqa_med2019", category="plane")) == \
        {"answer_type": "open", "dataset": "vqa_med2019", "category": "plane"}
    # answer_type missing or odd: inferred from the answer
    assert categorize(rec("Is it?", "YES", answer_type=None, dataset="pathvqa"))["answer_type"] == "closed"
    assert categorize(rec("What is it?", "cyst", answer_type="", dataset="pathvqa")) == \
        {"answer_type": "open", "dataset": "pathvqa"}
    multi = {"id": "m", "image": "/x.jpg", "meta": {"dataset": "llava_med", "answer_type": "open", "question_type": "conversation"},
             "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "a"},
                               {"from": "human", "value": "And?"}, {"from": "gpt", "value": "b"}]}
    assert categorize(multi) == {"answer_type": "open", "dataset": "llava_med", "question_type": "conversation"}
    r = rec("Is there a fracture?", "yes")
    before = json.dumps(r)
    categorize(r)
    assert json.dumps(r) == before  # pure: the record is not touched


@pytest.fixture(scope="module")
def converted(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("trans")
    rad = shared_data / "vqa_rad"
    records, _ = vqa_rad.convert([rad / "mevf_trainset.json", rad / "mevf_testset.json"], rad / "VQA_RAD Image Folder",
                                 show_progress=False)
    write_json(out / "vqa_rad.json", records)
    sl = shared_data / "slake_sample"
    records, _ = slake.convert(sl / "train.json", sl / "imgs", split="test", lang="all", show_progress=False)
    write_json(out / "slake.json", records)
    return out


def test_real_data_test_split(converted):
    records, mapping, summary = data_trans.build([converted / "vqa_rad.json", converted / "slake.json"], "test")
    assert len(records) == len(mapping) == 451 + 356
    rad = {k: v for k, v in mapping.items() if v["dataset"] == "vqa_rad"}
    assert Counter(v["answer_type"] for v in rad.values()) == {"closed": 272, "open": 179}
    assert summary["datasets"]["vqa_rad"]["answer_type"] == {"closed": 272, "open": 179}
    assert summary["inputs"][str(converted / "vqa_rad.json")] == {"records": 3515, "selected": 451}
    assert all("closed_type" in v for v in rad.values() if v["answer_type"] == "closed")
    assert not any("closed_type" in v for v in mapping.values() if v["answer_type"] == "open")
    closed = Counter(v["closed_type"] for v in rad.values() if v["answer_type"] == "closed")
    assert closed["yes_no"] > 200 and closed["modality"] >= 1 and closed["position"] >= 1 and closed["general"] >= 1
    assert sum(summary["datasets"]["slake"]["content_type"].values()) == 356
    assert all("question_type" in v for v in rad.values())


def test_cli_and_bad_inputs(converted, tmp_path, capsys):
    out = tmp_path / "eval"
    assert data_trans.main(["--inputs", str(converted / "vqa_rad.json"), "--output_dir", str(out)]) == 0
    test = json.loads((out / "test.json").read_text())
    mapping = json.loads((out / "type_mapping.json").read_text())
    assert len(test) == 451 and set(mapping) == {r["id"] for r in test}
    assert json.loads((out / "categories.json").read_text())["total"] == 451
    assert data_trans.main(["--inputs", str(converted / "vqa_rad.json"), "--out_dir", str(out), "--split", "val"]) == 2
    # the same file twice: repeated ids are an error, not a silent overwrite
    with pytest.raises(DataError, match="also in"):
        data_trans.build([converted / "slake.json", converted / "slake.json"], "test")
    bad = tmp_path / "bad.json"
    write_json(bad, [{"id": "x1", "conversations": [{"from": "human", "value": "q"}]}])
    with pytest.raises(DataError, match="bad.json: record x1"):
        data_trans.build([bad], None)
