"""Issue 16.9: grounding is scored against the best-matching reference box, position match is reported, and region
tasks stay out of "overall".

One Qwen2-VL predictions file (boxes 0-1000 relative to the 200x100 original image):
  k1, k2  label "kidney" with two reference boxes; the prediction boxes the second (k1) / the first (k2) exactly.
  s1      slake "left kidney": box in the viewer's right third = the patient's left (radiological display) -> match
  s2      slake "upper lesion": box in the lower third -> no match
  s3      slake "right lung": no box -> no match
  y1      synth "left lesion": box in the viewer's left third; synth names image sides -> match
  r1, r2  region_classification "liver" (answers "liver" / "spleen"); v1, v2 yes/no VQA questions (right / wrong)
"""
from __future__ import annotations

import json

import pytest

from medvl.metrics import grounding as g

IMAGE, INPUT = [200, 100], [400, 200]
KIDNEYS = [[0, 0, 40, 40], [150, 50, 190, 90]]


def _box_text(b) -> str:
    x1, y1, x2, y2 = b
    return f"<|box_start|>({x1 * 5},{y1 * 10}),({x2 * 5},{y2 * 10})<|box_end|>"


def _ground(rid, label, refs, pred, dataset="slake") -> dict:
    return {"id": rid, "prediction": pred, "reference": label, "question": f"Locate the {label}.", "task": "grounding",
            "answer_type": "open", "dataset": dataset, "image_size": IMAGE, "input_size": INPUT,
            "ref_boxes": [{"label": label, "xyxy": b, "image_size": IMAGE} for b in refs]}


def _text(rid, task, ref, pred, answer_type) -> dict:
    return {"id": rid, "prediction": pred, "reference": ref, "question": "q?", "task": task,
            "answer_type": answer_type, "dataset": "slake"}


ROWS = [
    _ground("k1", "kidney", KIDNEYS, _box_text(KIDNEYS[1])),
    _ground("k2", "kidney", KIDNEYS, _box_text(KIDNEYS[0])),
    _ground("s1", "left kidney", [[150, 40, 190, 60]], _box_text([150, 40, 190, 60])),
    _ground("s2", "upper lesion", [[80, 0, 120, 20]], _box_text([80, 70, 120, 95])),
    _ground("s3", "right lung", [[10, 10, 60, 90]], "I cannot see it."),
    _ground("y1", "left lesion", [[10, 40, 50, 60]], _box_text([10, 40, 50, 60]), dataset="synth"),
    _text("r1", "region_classification", "liver", "liver", "open"),
    _text("r2", "region_classification", "liver", "spleen", "open"),
    _text("v1", "vqa", "yes", "yes", "closed"),
    _text("v2", "vqa", "no", "yes", "closed"),
]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from eval.evaluate import evaluate_predictions

    root = tmp_path_factory.mktemp("gtrust")
    mapping = {}
    for r in ROWS:
        entry = {"answer_type": r["answer_type"], "dataset": r["dataset"]}
        if r["task"] == "vqa":
            entry["closed_type"] = "yes_no"
        if r["task"] == "region_classification":
            entry["question_type"] = "region_classification"
        mapping[r["id"]] = entry
    (root / "type_mapping.json").write_text(json.dumps(mapping))
    d = root / "model"
    d.mkdir()
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (d / "run_info.json").write_text(json.dumps({"family": "qwen2_vl", "model": "model"}))
    return evaluate_predictions(d / "predictions.jsonl", root / "type_mapping.json", n_boot=20)


def test_best_matching_reference_box(result):
    ground = result["categories"]["grounding"]
    ious = dict(zip(ground["ids"], ground["metrics"]["mean_iou"]["per_sample"]))
    assert ious["k1"] == pytest.approx(1.0) and ious["k2"] == pytest.approx(1.0)  # first box only: k1 was 0
    assert ground["per_sample_boxes"][0]["ref_xyxy"] == KIDNEYS[1]
    assert ground["issues"]["several_ref_boxes_best_match_used"] == 2
    assert g.best_reference([0, 0, 1, 1], [[50, 50, 60, 60], [5, 5, 8, 8]]) == 1  # no overlap: nearest centre
    assert g.best_reference(None, KIDNEYS) == 0


def test_position_match_reported(result, tmp_path):
    from eval.tables import write_tables

    pos = result["categories"]["grounding"]["metrics"]["position_match_rate"]
    per = dict(zip(result["categories"]["grounding"]["ids"], pos["per_sample"]))
    assert per == {"k1": None, "k2": None, "s1": 1.0, "s2": 0.0, "s3": 0.0, "y1": 1.0}
    assert pos["score"] == pytest.approx(0.5) and "4 of 6" in pos["note"]
    md = write_tables({"model": result}, tmp_path)["md"].read_text()
    assert "| position match | 0.500 |" in md


def test_region_tasks_are_not_in_overall(result, tmp_path):
    from eval.tables import write_tables

    cats = result["categories"]
    assert cats["overall"]["n"] == 2 and sorted(cats["overall"]["ids"]) == ["v1", "v2"]
    assert "open" not in cats and "native/question_type/region_classification" not in cats
    region = cats["region_classification"]
    assert region["n"] == 2 and region["metrics"]["exact_match"]["score"] == pytest.approx(0.5)
    assert "## region_classification (n = 2)" in write_tables({"model": result}, tmp_path)["md"].read_text()
