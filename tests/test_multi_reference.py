"""#16.2: every accepted answer is a reference: best match for per-sample metrics, pycocoevalcap's own multi-reference
scoring for BLEU / METEOR / CIDEr, wired from meta.answers through eval.generate's rows into eval.evaluate."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from data_process.data_trans import categorize
from medvl.jsonio import write_json
from medvl.schema import make_record
from data_process.vqa_med2019 import parse_answer
from eval.evaluate import evaluate_predictions
from eval.generate import prediction_row
from medvl.metrics import nlg
from medvl.metrics.references import best_of
from medvl.metrics.registry import METRICS

# VQA-Med 2019 style reference answers: `#` alternatives, `( )` optional words
RAW = [("what modality is shown?", "ct#computed tomography", "modality"),
       ("in what plane is this image taken?", "axial#transverse", "plane"),
       ("what organ system is shown?", "gastrointestinal#gi (tract)", "organ"),
       ("is this a t1 weighted, t2 weighted, or flair image?", "t2#t2 (weighted)", "modality"),
       ("what is abnormal in the image?", "pulmonary (embolism)#pe", "abnormality"),
       ("what is the primary abnormality in this image?", "renal cell (carcinoma)", "abnormality")]


@pytest.fixture(scope="module")
def last_form_run(tmp_path_factory):
    """A model answering every question with the last accepted form, as eval.generate writes its rows."""
    root = tmp_path_factory.mktemp("vqamed")
    enc = SimpleNamespace(image_sizes=[], input_sizes=[])
    rows, mapping = [], {}
    for i, (q, raw, cat) in enumerate(RAW):
        turn, accepted = parse_answer(raw)
        rec = make_record(f"m{i}", "/img.jpg", q, turn, {"dataset": "vqa_med2019", "split": "test", "category": cat,
                                                          "answer_type": "open", "answers": accepted})
        rows.append(prediction_row(rec, accepted[-1], enc, "plain"))
        mapping[rec["id"]] = categorize(rec)
    (root / "m").mkdir()
    (root / "m" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_json(root / "type_mapping.json", mapping)
    return root, rows


def test_last_accepted_form_scores_full_marks(last_form_run):
    root, rows = last_form_run
    assert any(r["prediction"] != r["reference"] for r in rows)  # the fixture does answer with other forms
    res = evaluate_predictions(root / "m" / "predictions.jsonl", root / "type_mapping.json", n_boot=20)
    mets = res["categories"]["overall"]["metrics"]
    for m in ("exact_match", "token_f1", "word_recall", "rouge_l", "char_f1"):
        assert mets[m]["score"] == pytest.approx(1.0), m
    refs = [[r["reference"], *r["answers"]] for r in rows]
    direct = _direct([r["prediction"] for r in rows], [list(dict.fromkeys(x)) for x in refs])
    assert mets["cider"]["score"] == pytest.approx(direct["cider"])
    assert mets["bleu1"]["score"] == pytest.approx(direct["bleu"][0])


def test_list_reference_is_accepted(tmp_path):
    rows = [{"id": "a", "prediction": "gi", "reference": ["gastrointestinal", "gi"], "answer_type": "open"},
            {"id": "b", "prediction": "axial", "reference": "axial", "answer_type": "open"}]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mapping = {"a": {"answer_type": "open", "dataset": "x"}, "b": {"answer_type": "open", "dataset": "x"}}
    res = evaluate_predictions(tmp_path / "m" / "predictions.jsonl", mapping, n_boot=20)
    assert res["categories"]["overall"]["metrics"]["exact_match"]["per_sample"] == [1.0, 1.0]
    rows[0]["reference"] = ["gi", ""]
    (tmp_path / "m" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(Exception, match="id 'a': empty or missing reference"):
        evaluate_predictions(tmp_path / "m" / "predictions.jsonl", mapping, n_boot=20)


def _direct(preds, ref_lists):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(ref_lists)})
    res = tok.tokenize({i: [{"caption": p}] for i, p in enumerate(preds)})
    return {"bleu": Bleu(4).compute_score(gts, res, verbose=0)[0], "cider": Cider().compute_score(gts, res)[0],
            "meteor": Meteor().compute_score(gts, res)[0]}


def test_multi_reference_coco_equals_pycocoevalcap_with_lists():
    preds = ["a small nodule in the left lung", "the liver is enlarged", "no acute findings", "pleural effusion"]
    refs = [["nodule in the left lung", "small left lung nodule"], ["enlarged liver", "hepatomegaly"],
            ["normal chest radiograph"], ["right pleural effusion", "effusion", "fluid in the pleural space"]]
    ours = nlg.coco_scores(preds, refs)
    direct = _direct(preds, refs)
    for k in range(4):
        assert ours[f"bleu{k + 1}"]["score"] == pytest.approx(direct["bleu"][k], abs=1e-12)
    assert ours["cider"]["score"] == pytest.approx(direct["cider"], abs=1e-12)
    assert ours["meteor"]["score"] == pytest.approx(direct["meteor"], abs=1e-9)


def test_per_sample_metrics_take_the_best_reference():
    refs = [["gastrointestinal", "GI tract", "gi"], ["pulmonary embolism", "PE"], "the liver"]
    for m in ("exact_match", "token_f1", "closed_accuracy"):
        assert best_of(METRICS[m].fn, ["gi", "pe", "liver"], refs) == [1.0, 1.0, 1.0], m
    part = ["gi"], [["gastrointestinal", "gi tract"]]
    assert best_of(METRICS["token_f1"].fn, *part) == [pytest.approx(2 / 3)]
    assert best_of(METRICS["word_precision"].fn, *part) == [1.0]


def test_training_validation_scores_every_accepted_answer():
    from train.validation import generation_scores

    scores = generation_scores(["gi", "pe"], [["gastrointestinal", "gi"], ["pulmonary embolism", "pe"]], ["open"] * 2)
    assert scores["exact_match"] == 1.0 and scores["token_f1"] == 1.0
