"""Calibration of closed yes/no answers: the metrics on hand-computed cases (and sklearn's calibration_curve when it
is installed), the yes/no probabilities eval.perplexity stores (against a softmax of the tiny model's logits computed
here), and result_statistic's tables, JSON and report with and without the probabilities; the leakage warning."""
from __future__ import annotations

import json
import math
import random
import shutil

import pytest
import torch

import result_statistic
from medvl.metrics.calibration import calibration_summary, expected_calibration_error, reliability_bins, risk_coverage
from eval.calibration import NO_DATA, model_calibration
from eval.leakage_notes import leakage_warnings
from tests.conftest import qa_record, write_image


# ------------------------------------------------------------------------------------------------ pure functions
def test_ece_and_bins_by_hand():
    conf = [0.95, 0.95, 0.65, 0.65, 0.65, 0.15]
    ok = [1, 0, 1, 1, 0, 0]
    # bin 9: 2 at 0.95, acc 0.5 -> 0.45 * 2/6; bin 6: 3 at 0.65, acc 2/3 -> 1/60 * 3/6; bin 1: 0.15, acc 0 -> 0.15/6
    assert math.isclose(expected_calibration_error(conf, ok), (0.9 + 0.05 + 0.15) / 6)
    bins = reliability_bins(conf, ok)
    assert len(bins) == 10 and [b["count"] for b in bins] == [0, 1, 0, 0, 0, 0, 3, 0, 0, 2]
    assert bins[6]["lower"] == 0.6 and bins[6]["upper"] == 0.7
    assert math.isclose(bins[6]["accuracy"], 2 / 3) and math.isclose(bins[6]["mean_confidence"], 0.65)
    assert bins[0]["accuracy"] is None and bins[0]["mean_confidence"] is None  # empty: no number, not 0
    assert expected_calibration_error([0.75] * 4, [1, 1, 1, 0]) == 0.0  # 75% sure, 75% right
    assert math.isclose(expected_calibration_error([0.9, 0.6], [1, 1], n_bins=1), 0.25)  # one bin: |1 - 0.75|


def test_bin_edges_low_edge_inclusive_and_one_in_the_last_bin():
    counts = [b["count"] for b in reliability_bins([0.0, 0.5, 0.7, 0.999, 1.0], [0, 1, 1, 1, 1])]
    assert counts == [1, 0, 0, 0, 0, 1, 0, 1, 0, 2]
    assert [b["count"] for b in reliability_bins([0.5, 1.0], [1, 1], n_bins=2)] == [0, 2]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="differ in length"):
        expected_calibration_error([0.5], [1, 0])
    with pytest.raises(ValueError, match="sample 1: confidence 1.2"):
        reliability_bins([0.5, 1.2], [1, 0])
    with pytest.raises(ValueError, match="sample 0: correctness 0.5"):
        risk_coverage([0.5], [0.5])
    with pytest.raises(ValueError, match="at least one"):
        calibration_summary([], [])
    with pytest.raises(ValueError, match="nan"):
        risk_coverage([float("nan")], [1])


def test_risk_coverage_ties_answered_together_and_aurc_by_hand():
    rc = risk_coverage([0.9, 0.8, 0.8, 0.6], [1, 0, 1, 0])
    pts = [(p["threshold"], p["coverage"], p["n_answered"], round(p["selective_accuracy"], 6)) for p in rc["points"]]
    assert pts == [(0.9, 0.25, 1, 1.0), (0.8, 0.75, 3, round(2 / 3, 6)), (0.6, 1.0, 4, 0.5)]
    assert math.isclose(rc["aurc"], 0.25 * 0 + 0.5 * (1 / 3) + 0.25 * 0.5)
    # no ties: the mean over k of the risk of the k most confident (0, 1/2, 1/3, 1/4)
    rc = risk_coverage([0.3, 0.9, 0.5, 0.7], [1, 1, 1, 0])
    assert math.isclose(rc["aurc"], (0 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert [p["risk"] for p in rc["points"]][-1] == 0.25  # all answered: 1 - accuracy
    # the confidence that ranks the right answers first has the lower area
    good = risk_coverage([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 0])["aurc"]
    bad = risk_coverage([0.6, 0.7, 0.8, 0.9], [1, 1, 0, 0])["aurc"]
    assert good < bad and math.isclose(good, (0 + 0 + 1 / 3 + 1 / 2) / 4)


def test_summary_matches_the_parts():
    conf, ok = [0.95, 0.55, 0.85, 0.62], [1, 0, 1, 1]
    s = calibration_summary(conf, ok, n_bins=5)
    assert s["n"] == 4 and s["n_bins"] == 5 and len(s["bins"]) == 5 and s["accuracy"] == 0.75
    assert math.isclose(s["ece"], expected_calibration_error(conf, ok, 5))
    assert s["risk_coverage"] == risk_coverage(conf, ok)


def test_bins_agree_with_sklearn_calibration_curve():
    calibration = pytest.importorskip("sklearn.calibration")  # not a dependency: checked only where it is installed
    rng = random.Random(3)
    conf = [round(rng.uniform(0, 1), 4) for _ in range(400)]
    conf = [c if abs(c * 10 - round(c * 10)) > 1e-6 else c + 1e-4 for c in conf]  # inner edges: float edges differ
    ok = [int(rng.random() < c ** 0.7) for c in conf]
    prob_true, prob_pred = calibration.calibration_curve(ok, conf, n_bins=10, strategy="uniform")
    full = [b for b in reliability_bins(conf, ok) if b["count"]]
    assert [round(b["accuracy"], 9) for b in full] == [round(float(x), 9) for x in prob_true]
    assert [round(b["mean_confidence"], 9) for b in full] == [round(float(x), 9) for x in prob_pred]


# ------------------------------------------------------------------------------------------------ one model's calibration
def _result(per_sample: dict, ids: list[str], correct: list[float], tokens=True) -> dict:
    ppl = {"per_sample": per_sample, **({"yes_no_tokens": {"combine": "sum"}} if tokens else {})}
    return {"perplexity": ppl, "categories": {"closed": {"ids": ids, "metrics": {
        "closed_accuracy": {"score": sum(correct) / len(correct), "per_sample": correct}}}}}


def test_confidence_is_the_predicted_words_share_of_yes_plus_no():
    per = {"a": {"yes_no_prob": {"yes": 0.6, "no": 0.2}}, "b": {"yes_no_prob": {"yes": 0.6, "no": 0.2}},
           "c": {"yes_no_prob": {"yes": 0.1, "no": 0.1}}, "d": {"nll_sum": 1.0, "tokens": 1}}
    preds = [{"id": "a", "prediction": "Yes, there is."}, {"id": "b", "prediction": "no"},
             {"id": "c", "prediction": "a mass"}, {"id": "d", "prediction": "left"}]
    cal = model_calibration(_result(per, ["a", "b", "c", "d"], [1.0, 0.0, 0.0, 1.0]), predictions=preds)
    assert cal["available"] and cal["n"] == 2 and cal["n_closed_yes_no"] == 3 and cal["n_not_yes_no"] == 1
    # a: 0.6 / 0.8 = 0.75 right; b: 0.2 / 0.8 = 0.25 wrong -> bins 7 and 2; ECE = (0.25 + 0.25) / 2
    assert [b["count"] for b in cal["bins"]] == [0, 0, 1, 0, 0, 0, 0, 1, 0, 0]
    assert math.isclose(cal["mean_confidence"], 0.5) and math.isclose(cal["ece"], 0.25)
    assert math.isclose(cal["mean_yes_no_mass"], 0.8)


def test_missing_probabilities_say_rerun_never_zero():
    old = _result({"a": {"nll_sum": 1.0, "tokens": 1}}, ["a"], [1.0], tokens=False)
    cal = model_calibration(old, predictions=[{"id": "a", "prediction": "yes"}])
    assert cal == {"available": False, "reason": cal["reason"]} and cal["reason"].startswith(NO_DATA)
    cal = model_calibration({"perplexity": None, "categories": {}}, predictions=[])
    assert cal["available"] is False and cal["reason"].startswith(NO_DATA)


# ------------------------------------------------------------------------------------------------ the perplexity pass
def _independent_probs(model, proc, rec, yes_ids, no_ids):
    """p(yes), p(no) at the first answer position: the prompt alone, the softmax of its last logits."""
    from medvl.collate import VLCollator

    prompt = proc.encode(rec, train=False)
    batch = VLCollator(proc.pad_token_id, proc.image_token_id)([prompt])
    with torch.no_grad():
        p = torch.softmax(model(**batch).logits[0, -1].double(), -1)
    return float(p[yes_ids].sum()), float(p[no_ids].sum())


def test_perplexity_pass_stores_yes_no_probabilities_of_the_generation_prompt(tiny_models, tmp_path):
    from eval.generate import apply_preset
    from eval.model_spec import ModelSpec, load_spec
    from eval.perplexity import perplexity_for_model

    recs = [qa_record(f"r{i}", write_image(tmp_path / f"i{i}.png", size=(64 + 8 * i, 64), seed=i),
                      q, a, answer_type="closed")
            for i, (q, a) in enumerate([("Is there a lesion?", "yes"), ("Is it normal?", "No."),
                                        ("Is the lesion large?", "Yes, it is large"), ("Which side?", "left"),
                                        ("有病变吗？", "是")])]
    spec = ModelSpec.parse(f"m={tiny_models['qwen2_vl']}")
    fast = dict(batch_size=3, dtype="float32", progress=False, num_workers=0)
    res = perplexity_for_model(spec, recs, tmp_path / "out", **fast)
    tok = res["yes_no_tokens"]
    # the tiny BPE has yes / " yes" / no / " no" as single tokens; "Yes" is two ("Y", "es") and is left out
    assert tok["variants"]["yes"] == ["yes", " yes"] and tok["variants"]["no"] == ["no", " no"]
    assert tok["combine"] == "sum" and "missing" not in tok
    stored = {rid: e.get("yes_no_prob") for rid, e in res["per_sample"].items()}
    assert set(k for k, v in stored.items() if v) == {"r0", "r1", "r2"}  # not "left", not the Chinese 是
    model, proc, _ = load_spec(spec, dtype="float32")
    vocab = proc.tokenizer
    yes_ids = [vocab.encode(v, add_special_tokens=False)[0] for v in tok["variants"]["yes"]]
    no_ids = [vocab.encode(v, add_special_tokens=False)[0] for v in tok["variants"]["no"]]
    for rec in recs[:3]:
        p = stored[rec["id"]]
        assert 0.0 < p["yes"] + p["no"] <= 1.0
        want = _independent_probs(model, proc, rec, yes_ids, no_ids)
        assert math.isclose(p["yes"], want[0], rel_tol=1e-4) and math.isclose(p["no"], want[1], rel_tol=1e-4)
    # predictions made with a preset: the same suffix is appended here (the prompt generation used)
    (tmp_path / "out2" / "m").mkdir(parents=True)
    (tmp_path / "out2" / "m" / "run_info.json").write_text(json.dumps({"preset": "lmms_eval"}))
    res2 = perplexity_for_model(spec, recs, tmp_path / "out2", **fast)
    assert res2["preset"] == "lmms_eval" and res2["fingerprint"]["preset"]["name"] == "lmms_eval"
    with_suffix = apply_preset(recs[:1], "lmms_eval")[0]
    assert with_suffix["conversations"][0]["value"].endswith("single word or phrase.")
    want = _independent_probs(model, proc, with_suffix, yes_ids, no_ids)
    got = res2["per_sample"]["r0"]["yes_no_prob"]
    assert math.isclose(got["yes"], want[0], rel_tol=1e-4) and math.isclose(got["no"], want[1], rel_tol=1e-4)
    assert not math.isclose(got["yes"], stored["r0"]["yes"], rel_tol=1e-6)


# ------------------------------------------------------------------------------------------------ tables and report
YN = {f"q{i}": ("yes" if i % 2 else "no") for i in range(12)}
OPEN = {"o1": "liver", "o2": "left lung"}


def _write_set(root, with_probs: dict[str, bool], leakage: bool):
    """predictions + perplexity.json for each model, type_mapping.json and test.json (+ categories.json)."""
    data = root / "data"
    data.mkdir()
    mapping = {rid: {"answer_type": "closed", "closed_type": "yes_no", "dataset": "vqa_rad"} for rid in YN}
    mapping.update({rid: {"answer_type": "open", "dataset": "vqa_rad"} for rid in OPEN})
    (data / "type_mapping.json").write_text(json.dumps(mapping))
    recs = [qa_record(rid, write_image(data / f"{rid}.png", size=(40, 40), seed=k), "q?", ref)
            for k, (rid, ref) in enumerate({**YN, **OPEN}.items())]
    (data / "test.json").write_text(json.dumps(recs))
    if leakage:
        by_file = [{"train_file": "/data/train.json", "test_file": str(data / "test.json"), "test_records": 14,
                    "overlapping": 3, "image_exact": 2, "image_near": 0, "qa_pair": 1, "image_question": 1}]
        (data / "categories.json").write_text(json.dumps({"leakage": {"summary": {"test_records": 14},
                                                                      "by_file": by_file}}))
    rng = random.Random(0)
    for model, probs in with_probs.items():
        d = root / "pred" / model
        d.mkdir(parents=True)
        rows, per = [], {}
        for k, (rid, ref) in enumerate({**YN, **OPEN}.items()):
            pred = ref if k % 3 else ("no" if ref == "yes" else "yes")  # every third yes/no answer wrong
            rows.append({"id": rid, "prediction": pred, "reference": ref, "question": "q?", "task": "vqa",
                         "dataset": "vqa_rad"})
            per[rid] = {"nll_sum": 1.0, "tokens": 1}
            if probs and rid in YN:
                p_said = rng.uniform(0.55, 0.95)
                per[rid]["yes_no_prob"] = {pred: 0.9 * p_said, ("no" if pred == "yes" else "yes"): 0.9 * (1 - p_said)}
        (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        ppl = {"model": model, "overall": {"ppl": 2.7, "nll_sum": 14.0, "tokens": 14, "n": 14}, "by_category": {},
               "per_sample": per, **({"yes_no_tokens": {"combine": "sum"}} if probs else {})}
        (d / "perplexity.json").write_text(json.dumps(ppl))
    return data


def _run(root, data, *extra):
    mp = pytest.MonkeyPatch()
    real_which = shutil.which
    mp.setattr(shutil, "which", lambda name, *a, **k: None if name == "java" else real_which(name, *a, **k))
    try:
        rc = result_statistic.main(["--pred_dir", str(root / "pred"), "--type_mapping", str(data / "type_mapping.json"),
                                    "--out_dir", str(root / "out"), "--n_boot", "20", "--allow_missing_metrics",
                                    "--protocols", "none", "--html", "--test_data", str(data / "test.json"), *extra])
    finally:
        mp.undo()
    assert rc == 0
    out = root / "out"
    return (json.loads((out / "evaluation_metrics.json").read_text()), (out / "model_comparison_tables.md").read_text(),
            (out / "report.html").read_text())


def test_tables_json_and_report_with_and_without_probabilities(tmp_path):
    data = _write_set(tmp_path, {"base": True, "stage2": False}, leakage=True)
    metrics, md, page = _run(tmp_path, data)
    cal = metrics["calibration"]
    assert cal["base"]["available"] and cal["base"]["n"] == 12 and len(cal["base"]["bins"]) == 10
    assert math.isclose(cal["base"]["accuracy"], 8 / 12)  # every third of the 12 yes/no answers is wrong
    assert set(cal["base"]) >= {"ece", "n", "bins", "risk_coverage"} and "aurc" in cal["base"]["risk_coverage"]
    assert cal["stage2"]["available"] is False and cal["stage2"]["reason"].startswith(NO_DATA)
    assert metrics["results"]["base"]["calibration"] == cal["base"]
    section = md.split("## calibration of closed yes/no answers", 1)[1].split("\n## ", 1)[0]
    ece_row = next(line for line in section.splitlines() if line.startswith("| ECE"))
    assert f"{cal['base']['ece']:.3f}" in ece_row and "0.000" not in ece_row.split("|")[3]
    assert NO_DATA in section  # stage2's cell: the reason, never a number
    assert "## calibration bins" in md
    assert (tmp_path / "out" / "plots" / "reliability.png").exists()
    assert (tmp_path / "out" / "plots" / "risk_coverage.png").exists()
    assert 'alt="reliability diagram of closed yes/no answers"' in page
    assert 'alt="risk-coverage curve of closed yes/no answers"' in page
    # the leakage warning heads the tables and the report
    first_table = md.index("\n## ")
    warn = "3 of 14 test records overlap training data /data/train.json"
    assert warn in md[:first_table]
    header = page.split("</header>", 1)[0]
    assert warn in header and 'class="warn leakage"' in header
    assert metrics["leakage_warnings"] and warn in metrics["leakage_warnings"][0]


def test_no_probabilities_anywhere_says_rerun(tmp_path):
    data = _write_set(tmp_path, {"base": False}, leakage=False)
    metrics, md, page = _run(tmp_path, data, "--no_plots")
    section = md.split("## calibration of closed yes/no answers", 1)[1].split("\n## ", 1)[0]
    assert NO_DATA in section and "ECE" not in section
    assert 'id="no-calibration"' in page and "reliability diagram" not in page and NO_DATA in page
    assert "LEAKAGE" not in md and "leakage" not in page.split("</header>", 1)[0]
    assert metrics["leakage_warnings"] == []


def test_leakage_warnings_read_once_per_folder_and_ignore_a_clean_audit(tmp_path):
    (tmp_path / "categories.json").write_text(json.dumps({"leakage": {"summary": {"test_records": 5}, "by_file": [
        {"train_file": "t.json", "overlapping": 0, "image_exact": 0, "image_near": 0, "qa_pair": 0,
         "image_question": 0}]}}))
    assert leakage_warnings(tmp_path / "test.json", tmp_path / "type_mapping.json") == []
    (tmp_path / "categories.json").write_text(json.dumps({"leakage": {"summary": {"test_records": 5}, "by_file": [
        {"train_file": "t.json", "overlapping": 2, "image_exact": 0, "image_near": 1, "qa_pair": 1,
         "image_question": 0}]}}))
    lines = leakage_warnings(tmp_path / "test.json", tmp_path / "type_mapping.json", None)
    assert len(lines) == 1 and "2 of 5 test records overlap training data t.json" in lines[0]
    (tmp_path / "categories.json").write_text("{not json")
    assert leakage_warnings(tmp_path / "test.json") == []
