"""eval.evaluate + eval.tables + eval.plots on hand-built predictions whose scores are computed by hand.

Two models answer the same 12 VQA questions and 3 grounding questions: "base" (Qwen2-VL, boxes as 0-1000
relative "(x1,y1),(x2,y2)") and "stage2" (Qwen2.5-VL, JSON bbox_2d in pixels of the 2x resized input). Both
families' boxes describe the same pixels, so a correct family lookup from run_info.json gives IoU 1.
JVM starts dominate the time (METEOR ~7 s): one module fixture evaluates both models once, sharing one JVM.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eval.evaluate import (CocoSession, compare_models, evaluate_models, evaluate_predictions, headline_metric,
                           load_predictions)
from medvl.metrics.errors import MetricUnavailable

# id: (answer_type, closed_type, native question_type, reference, base prediction, stage2 prediction)
VQA = {
    "y1": ("closed", "yes_no", "PRES", "yes", "yes", "Yes, there is."),
    "y2": ("closed", "yes_no", "PRES", "no", "yes", "no"),
    "y3": ("closed", "yes_no", "ABN", "yes", "no", "yes"),
    "y4": ("closed", "yes_no", "ABN", "no", "No.", "no"),
    "m1": ("closed", "modality", "MODALITY", "CT", "MRI", "CT"),
    "m2": ("closed", "modality", "MODALITY", "MRI", "MRI", "mri"),
    "p1": ("closed", "position", "POS", "left", "right", "left"),
    "p2": ("closed", "position", "POS", "right", "right", "left"),
    "g1": ("closed", "general", "SIZE", "liver", "spleen", "the liver"),
    "o1": ("open", None, "POS", "lesion in the upper left lung", "lesion in the lung", "lesion in the upper left lung"),
    "o2": ("open", None, "ABN", "enlarged heart", "normal heart", "enlarged heart"),
    "o3": ("open", None, "ABN", "no acute findings", "fracture", "no acute findings"),
}
IMAGE, INPUT = [200, 100], [400, 200]  # original (w, h) and the resized model input
REF_BOXES = {"b1": [20, 10, 60, 50], "b2": [100, 0, 200, 100], "b3": [0, 50, 100, 100]}
BOX_PRED = {
    # Qwen2-VL: relative 0-1000 of the original image. b1 exact, b2 IoU 0.5, b3 no box.
    "base": {"b1": "<|box_start|>(100,100),(300,500)<|box_end|>", "b2": "<|box_start|>(750,0),(1000,1000)<|box_end|>",
             "b3": "I cannot find it."},
    # Qwen2.5-VL: absolute pixels of the 400x200 input. All exact.
    "stage2": {"b1": '{"bbox_2d": [40, 20, 120, 100], "label": "lesion"}',
               "b2": '{"bbox_2d": [200, 0, 400, 200], "label": "lesion"}',
               "b3": '{"bbox_2d": [0, 100, 200, 200], "label": "lesion"}'},
}
FAMILY = {"base": "qwen2_vl", "stage2": "qwen2_5_vl"}


def write_fixture(root: Path, perplexity: bool = True) -> tuple[Path, Path]:
    """(pred_dir, type_mapping.json) for the two models above."""
    pred_dir = root / "predictions"
    mapping = {}
    for rid, (atype, ctype, qtype, ref, _, _) in VQA.items():
        mapping[rid] = {"answer_type": atype, **({"closed_type": ctype} if ctype else {}), "dataset": "vqa_rad",
                        "question_type": qtype}
    for rid in REF_BOXES:
        mapping[rid] = {"answer_type": "open", "dataset": "vqa_rad", "question_type": "grounding"}
    (root / "type_mapping.json").write_text(json.dumps(mapping))
    for k, model in enumerate(("base", "stage2")):
        rows = []
        for rid, (atype, _, _, ref, p_base, p_stage2) in VQA.items():
            rows.append({"id": rid, "prediction": p_base if model == "base" else p_stage2, "reference": ref,
                         "question": "q?", "answer_type": atype, "task": "vqa", "dataset": "vqa_rad", "ref_boxes": [],
                         "image_size": IMAGE, "input_size": INPUT, "prompt_mode": "default"})
        for rid, box in REF_BOXES.items():
            rows.append({"id": rid, "prediction": BOX_PRED[model][rid], "reference": "lesion", "question": "Locate",
                         "answer_type": "open", "task": "grounding", "dataset": "vqa_rad",
                         "ref_boxes": [{"label": "lesion", "xyxy": box, "image_size": IMAGE}], "image_size": IMAGE,
                         "input_size": INPUT, "prompt_mode": "default"})
        d = pred_dir / model
        d.mkdir(parents=True)
        (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "run_info.json").write_text(json.dumps({"family": FAMILY[model], "model": model, "checkpoint": "ckpt",
                                                     "adapters": [], "decoding": {"do_sample": False}}))
        if perplexity:
            (d / "perplexity.json").write_text(json.dumps({
                "overall": {"ppl": 5.0 - 2 * k, "nll_sum": 100.0, "tokens": 60},
                "by_category": {"closed": {"ppl": 4.0 - k, "nll_sum": 40.0, "tokens": 30}}}))
    return pred_dir, root / "type_mapping.json"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from medvl.metrics.bertscore import default_local_bertscore_model

    root = tmp_path_factory.mktemp("evalfix")
    pred_dir, mapping = write_fixture(root)
    bs = default_local_bertscore_model()
    results = evaluate_models({m: pred_dir / m / "predictions.jsonl" for m in ("base", "stage2")}, mapping,
                              bertscore_model=bs, n_boot=200)
    return {"root": root, "pred_dir": pred_dir, "mapping": mapping, "results": results, "bertscore_model": bs}


def _score(res, cat, metric):
    return res["categories"][cat]["metrics"][metric]["score"]


def test_categories_and_counts(evaluated):
    cats = evaluated["results"]["base"]["categories"]
    expected = {"overall": 12, "closed": 9, "closed/yes_no": 4, "closed/modality": 2, "closed/position": 2,
                "closed/general": 1, "open": 3, "grounding": 3, "native/question_type/PRES": 2,
                "native/question_type/ABN": 4, "native/question_type/POS": 3, "native/question_type/MODALITY": 2,
                "native/question_type/SIZE": 1}
    assert {c: cats[c]["n"] for c in cats} == expected
    assert list(cats)[:7] == ["overall", "closed", "closed/yes_no", "closed/modality", "closed/position",
                              "closed/general", "open"]
    assert sorted(cats["closed/position"]["ids"]) == ["p1", "p2"]


def test_closed_accuracy_hand_computed(evaluated):
    base, s2 = evaluated["results"]["base"], evaluated["results"]["stage2"]
    for cat, b, s in [("closed", 4 / 9, 8 / 9), ("closed/yes_no", 2 / 4, 1.0), ("closed/modality", 1 / 2, 1.0),
                      ("closed/position", 1 / 2, 1 / 2), ("closed/general", 0.0, 1.0)]:
        assert _score(base, cat, "closed_accuracy") == pytest.approx(b)
        assert _score(s2, cat, "closed_accuracy") == pytest.approx(s)
    # closed accuracy exists only where every sample is closed
    assert "closed_accuracy" not in base["categories"]["overall"]["metrics"]
    assert "closed_accuracy" in base["categories"]["overall"]["not_applicable"]
    # yes/no P/R/F1 of class "yes" for base: preds yes,yes,no,no vs refs yes,no,yes,no -> tp1 fp1 fn1 tn1
    yn = base["categories"]["closed/yes_no"]
    assert (yn["yes_no"]["tp"], yn["yes_no"]["fp"], yn["yes_no"]["fn"], yn["yes_no"]["tn"]) == (1, 1, 1, 1)
    assert yn["metrics"]["yes_no_f1"]["score"] == pytest.approx(0.5)
    ci = s2["categories"]["closed"]["metrics"]["closed_accuracy"]["ci"]
    assert ci["low"] <= 8 / 9 <= ci["high"] and ci["n_resamples"] == 200


def test_bleu_only_on_open_answers(evaluated):
    base = evaluated["results"]["base"]
    assert "bleu4" in base["categories"]["open"]["metrics"]
    for cat in ("overall", "closed", "closed/yes_no"):
        assert "bleu4" not in base["categories"][cat]["metrics"]
        assert "open-ended" in base["categories"][cat]["not_applicable"]["bleu4"]
    assert base["categories"]["closed/general"]["not_applicable"]["cider"].startswith("CIDEr needs")
    for cat in ("overall", "closed", "open"):
        assert "meteor" in base["categories"][cat]["metrics"]


def test_grounding_iou_counting_and_family_formats(evaluated):
    base = evaluated["results"]["base"]["categories"]["grounding"]
    s2 = evaluated["results"]["stage2"]["categories"]["grounding"]
    assert base["family"] == "qwen2_vl" and s2["family"] == "qwen2_5_vl"
    m = base["metrics"]
    assert m["box_rate"]["score"] == pytest.approx(2 / 3)
    assert m["mean_iou"]["score"] == pytest.approx((1 + 0.5 + 0) / 3)       # missing box = IoU 0
    assert m["mean_iou_boxed_only"]["score"] == pytest.approx((1 + 0.5) / 2)  # over the two boxed samples
    assert m["iou_gt_0_5_rate"]["score"] == pytest.approx(1 / 3)             # IoU exactly 0.5 is not > 0.5
    assert m["centre_inclusion_rate"]["score"] == pytest.approx(2 / 3)
    assert m["mean_centre_point_error_px_boxed_only"]["score"] == pytest.approx(12.5)
    assert m["mean_iou_boxed_only"]["per_sample"] == [pytest.approx(1.0), pytest.approx(0.5), None]
    # Qwen2.5-VL boxes are absolute pixels of the 2x input: parsed with its own family they match exactly
    assert s2["metrics"]["mean_iou"]["score"] == pytest.approx(1.0)
    assert s2["metrics"]["box_rate"]["score"] == 1.0


def test_wrong_family_finds_no_qwen25_box(evaluated):
    """Parsing Qwen2.5-VL JSON boxes as Qwen2-VL finds nothing: the family must come from run_info."""
    path = evaluated["pred_dir"] / "stage2" / "predictions.jsonl"
    rows = [r for r in load_predictions(path) if r["task"] == "grounding"]
    tmp = evaluated["root"] / "wrongfam" / "predictions.jsonl"
    tmp.parent.mkdir()
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = evaluate_predictions(tmp, evaluated["mapping"], "qwen2_vl", n_boot=50, allow_partial=True)
    assert res["categories"]["grounding"]["metrics"]["box_rate"]["score"] == 0.0
    assert res["categories"]["grounding"]["metrics"]["mean_iou"]["score"] == 0.0
    with pytest.raises(Exception, match="family"):
        evaluate_predictions(tmp, evaluated["mapping"], None, n_boot=50, allow_partial=True)  # no run_info.json here


def test_bertscore_recorded(evaluated):
    res = evaluated["results"]["stage2"]
    assert res["bertscore"]["model"] == evaluated["bertscore_model"]
    bs = res["categories"]["open"]["metrics"]["bertscore_f1"]
    assert bs["score"] == pytest.approx(1.0, abs=1e-4) and "ci" in bs  # all three open answers exact
    assert 0 < _score(evaluated["results"]["base"], "open", "bertscore_f1") < 1


def test_meteor_shared_jvm_matches_fresh_run(evaluated):
    """One METEOR JVM per model set gives the numbers of a fresh pycocoevalcap run on the category alone."""
    from medvl.metrics import nlg

    base = evaluated["results"]["base"]["categories"]["closed"]
    preds = [VQA[i][4] for i in base["ids"]]
    refs = [VQA[i][3] for i in base["ids"]]
    fresh = nlg.coco_scores(preds, refs, ["meteor"])["meteor"]
    assert base["metrics"]["meteor"]["score"] == pytest.approx(fresh["score"])
    assert base["metrics"]["meteor"]["per_sample"] == pytest.approx(fresh["per_sample"])


def test_compare_models_paired(evaluated):
    comp = compare_models(evaluated["results"], n_resamples=500)
    assert comp["base"] == "base"
    t = comp["by_model"]["stage2"]["closed"]
    assert t["metric"] == "closed_accuracy" and "McNemar" in t["test"]
    assert t["mean_diff"] == pytest.approx(4 / 9) and (t["only_a_correct"], t["only_b_correct"]) == (1, 5)
    assert comp["by_model"]["stage2"]["grounding"]["metric"] == "mean_iou"
    assert comp["by_model"]["stage2"]["open"]["metric"] == "token_f1"
    assert comp["by_model"]["stage2"]["closed/general"]["skipped"]  # one sample: no test
    assert headline_metric(evaluated["results"]["base"]["categories"]["overall"]) == "token_f1"


def test_tables_md_txt_json(evaluated, tmp_path):
    from eval.tables import write_tables

    paths = write_tables(evaluated["results"], tmp_path)
    md, txt = paths["md"].read_text(), paths["txt"].read_text()
    for cat in ("closed/yes_no", "closed/modality", "closed/position", "closed/general", "open", "grounding"):
        assert f"## {cat} (n = " in md and cat in txt
    assert "## closed (n = 9)" in md
    row = next(line for line in md.splitlines() if line.startswith("| closed accuracy |") and "0.889" in line)
    assert "| 0.444 [" in row and "| **0.889 [" in row  # stage2 best, bold, with CI
    txt_row = next(line for line in txt.splitlines() if line.startswith("closed accuracy") and "0.889" in line)
    assert "]*" in txt_row
    assert "n/a (closed)" in md  # BLEU on closed categories
    assert "mean IoU (missing box = 0)" in md and "mean IoU (boxed samples only)" in md
    assert "perplexity" in md and "**3.000 (60 tok)**" in md  # lower perplexity is better
    assert evaluated["bertscore_model"] in md  # BERTScore model named in the notes
    assert "Δ closed accuracy vs base (paired)" in md
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files
    data = json.loads(paths["json"].read_text())
    assert data["base"] == "base" and data["models"] == ["base", "stage2"]
    per = data["results"]["stage2"]["categories"]["closed"]["metrics"]["closed_accuracy"]["per_sample"]
    assert len(per) == 9 and sum(per) == 8


def test_plots(evaluated, tmp_path):
    from eval.plots import write_plots

    paths = write_plots(evaluated["results"], tmp_path / "plots")
    names = {p.name for p in paths}
    assert {"main.png", "closed_types.png", "grounding.png", "native_question_type.png"} <= names
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_missing_java_raises_or_is_recorded(evaluated, tmp_path, monkeypatch):
    from eval.tables import write_tables

    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "java" else real_which(name, *a, **k))
    path = evaluated["pred_dir"] / "base" / "predictions.jsonl"
    with pytest.raises(MetricUnavailable, match="java"):
        evaluate_predictions(path, evaluated["mapping"], n_boot=50)
    res = evaluate_predictions(path, evaluated["mapping"], n_boot=50, allow_missing=True)
    assert set(res["unavailable"]) == {"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "cider"}
    overall = res["categories"]["overall"]
    assert "meteor" not in overall["metrics"] and "java" in overall["unavailable"]["meteor"]
    assert overall["metrics"]["exact_match"]["score"] == pytest.approx(4 / 12)  # the rest is still computed
    md = write_tables({"base": res}, tmp_path)["md"].read_text()
    meteor_rows = [line for line in md.splitlines() if line.startswith("| METEOR |")]
    assert meteor_rows and all(line == "| METEOR | unavailable (see notes) |" for line in meteor_rows)
    assert "UNAVAILABLE for base: BLEU-1 (open), BLEU-2 (open), BLEU-3 (open), BLEU-4 (open), METEOR, CIDEr: " in md
    assert "no `java` executable on PATH" in md


def test_session_closes_jvm():
    s = CocoSession()
    s.close()  # closing an unopened session is a no-op
    with CocoSession() as s2:
        assert s2._meteor is None


def test_bad_input_names_the_sample(tmp_path):
    from medvl.jsonio import DataError

    d = tmp_path / "m"
    d.mkdir()
    (d / "predictions.jsonl").write_text(json.dumps({"id": "x1", "prediction": "yes", "reference": " ",
                                                     "task": "vqa", "answer_type": "closed"}) + "\n")
    with pytest.raises(DataError, match="x1"):
        evaluate_predictions(d / "predictions.jsonl", {}, n_boot=10)
    (d / "predictions.jsonl").write_text(json.dumps({"id": "x2", "prediction": "yes", "reference": "yes",
                                                     "task": "vqa"}) + "\n")
    with pytest.raises(DataError, match="x2.*answer_type"):
        evaluate_predictions(d / "predictions.jsonl", {}, n_boot=10)


def test_assign_categories_caption_datasets_and_fallbacks():
    """Captions are their own category (not in overall); several datasets add dataset/<name>; an id missing from
    the mapping falls back to the row's answer_type and data_trans' closed_type rules, and is counted."""
    from eval.evaluate import assign_categories

    rows = [{"id": "a", "task": "vqa", "reference": "yes", "prediction": "yes", "question": "Is it?"},
            {"id": "b", "task": "caption", "reference": "A CT image.", "prediction": "x"},
            {"id": "c", "task": "vqa", "reference": "MRI", "prediction": "x", "question": "What modality is this?",
             "answer_type": "closed", "dataset": "slake"}]
    mapping = {"a": {"answer_type": "closed", "closed_type": "yes_no", "dataset": "vqa_rad", "question_type": "PRES"},
               "b": {"answer_type": "open", "dataset": "vqa_rad"}}
    cats, infos, issues = assign_categories(rows, mapping)
    assert {c: [rows[i]["id"] for i in idx] for c, idx in cats.items()} == {
        "overall": ["a", "c"], "closed": ["a", "c"], "closed/yes_no": ["a"], "closed/modality": ["c"],
        "caption": ["b"], "dataset/slake": ["c"], "dataset/vqa_rad": ["a", "b"], "native/question_type/PRES": ["a"]}
    assert issues == {"missing_from_type_mapping": 1, "closed_type_inferred": 1}


def test_type_mapping_of_another_test_set_is_refused(evaluated):
    from medvl.jsonio import DataError

    with pytest.raises(DataError, match="none of its ids"):
        evaluate_predictions(evaluated["pred_dir"] / "base" / "predictions.jsonl", {"zzz": {"answer_type": "open"}})


def test_native_fields_cover_data_trans():
    """Every native category field data_trans writes is read as a category (guards against drift)."""
    from data_process.data_trans import NATIVE_KEY
    from eval.evaluate import NATIVE_FIELDS

    assert set(NATIVE_KEY.values()) | {"question_type"} <= set(NATIVE_FIELDS)


def test_yes_no_scores_only_for_yes_no_questions(evaluated):
    """Open answers that start with "no" ("no acute findings") must not get yes/no precision/recall."""
    base = evaluated["results"]["base"]["categories"]
    assert "yes_no_f1" not in base["open"]["metrics"] and "yes_no" not in base["open"]
    assert "yes_no_f1" in base["native/question_type/PRES"]["metrics"]  # all PRES questions are yes/no
