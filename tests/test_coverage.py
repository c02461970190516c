"""Issue 16.3 / 16.7: a model that lacks test ids is refused (or compared on the common ids), and every model's
pixel budget is shown, a difference flagged.

The example of the issue: a test set of 20 yes/no questions. "base" answers all 20 and is right on 6 (exact match
0.300), 5 of them among the first 14 ids. "stage2" has 14 rows (ids q00..q13; 2 of the other 6 are listed as failed
in its run_info.json, 4 are simply missing) and is right on 5 (0.357). Scored on what each has, stage2 looks better;
on the 14 common ids both are 5/14 = 0.357.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import result_statistic

IDS = [f"q{i:02d}" for i in range(20)]
BASE_RIGHT = {0, 1, 2, 3, 4, 19}
STAGE2_RIGHT = {5, 6, 7, 8, 9}
BUDGET = {"base": (3136, 1003520), "stage2": (3136, 401408)}


def _rows(model: str) -> list[dict]:
    right, n = (BASE_RIGHT, 20) if model == "base" else (STAGE2_RIGHT, 14)
    return [{"id": IDS[i], "prediction": "yes" if i in right else "no", "reference": "yes", "question": "Is it?",
             "answer_type": "closed", "task": "vqa", "dataset": "vqa_rad"} for i in range(n)]


def write_partial_fixture(root: Path, budgets=BUDGET) -> tuple[Path, Path]:
    mapping = {i: {"answer_type": "closed", "closed_type": "yes_no", "dataset": "vqa_rad"} for i in IDS}
    (root / "type_mapping.json").write_text(json.dumps(mapping))
    pred_dir = root / "predictions"
    for model in ("base", "stage2"):
        d = pred_dir / model
        d.mkdir(parents=True)
        (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(model)))
        lo, hi = budgets[model]
        failed = ({"q14": "unreadable_image: cannot identify image file", "q15": "over_length"}
                  if model == "stage2" else {})
        (d / "run_info.json").write_text(json.dumps({
            "family": "qwen2_vl", "model": model, "checkpoint": "ckpt", "adapters": [], "failed": failed,
            "image_processor": {"size": {"shortest_edge": lo, "longest_edge": hi}}}))
    return pred_dir, root / "type_mapping.json"


def _args(pred_dir, mapping, out, *extra) -> list[str]:
    return ["--pred_dir", str(pred_dir), "--type_mapping", str(mapping), "--out_dir", str(out), "--n_boot", "50",
            "--no_plots", *extra]


def _row(md: str, label: str) -> str:
    section = md.split("\n## overall (")[1].split("\n## ")[0]
    return next(line for line in section.splitlines() if line.startswith(f"| {label} |"))


def test_partial_model_is_refused_by_default(tmp_path, capsys):
    pred_dir, mapping = write_partial_fixture(tmp_path)
    out = tmp_path / "result"
    assert result_statistic.main(_args(pred_dir, mapping, out)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    assert "stage2: 14 of 20 test ids (2 failed in run_info.json, 4 missing from predictions.jsonl)" in err[0]
    assert "--allow_partial" in err[0] and "base:" not in err[0]
    assert not out.exists()

    from eval.coverage import PartialCoverage
    from eval.evaluate import evaluate_predictions

    with pytest.raises(PartialCoverage, match="stage2: 14 of 20"):
        evaluate_predictions(pred_dir / "stage2" / "predictions.jsonl", mapping, n_boot=10)


def test_allow_partial_compares_on_common_ids(tmp_path):
    pred_dir, mapping = write_partial_fixture(tmp_path)
    out = tmp_path / "result"
    assert result_statistic.main(_args(pred_dir, mapping, out, "--allow_partial")) == 0
    data = json.loads((out / "evaluation_metrics.json").read_text())
    for model in ("base", "stage2"):
        overall = data["results"][model]["categories"]["overall"]
        assert overall["n"] == 14 and sorted(overall["ids"]) == IDS[:14]
        assert overall["metrics"]["exact_match"]["score"] == pytest.approx(5 / 14)  # 0.357 each
    assert data["coverage"]["stage2"]["missing_ids"] == ["q16", "q17", "q18", "q19"]
    assert data["coverage"]["stage2"]["failed_ids"] == ["q14", "q15"]
    assert data["coverage"]["base"]["complete"] and data["coverage"]["base"]["n_compared"] == 14
    md = (out / "model_comparison_tables.md").read_text()
    assert "## overall (n = 14)" in md
    assert _row(md, "exact match").count("0.357") == 2 and "**" not in _row(md, "exact match")
    assert "PARTIAL COVERAGE (--allow_partial): stage2: 14 of 20 test ids (2 failed in run_info.json, 4 missing" in md
    assert "scored on the 14 ids all the models answered" in md
    assert "| test ids scored | 20 of 20 | 14 of 20 |" in md


def test_no_best_across_different_n(tmp_path):
    """Results scored on different samples (each model on what it has) never get a best marked."""
    from eval.evaluate import evaluate_predictions
    from eval.tables import write_tables

    pred_dir, mapping = write_partial_fixture(tmp_path)
    results = {m: evaluate_predictions(pred_dir / m / "predictions.jsonl", mapping, n_boot=20, allow_partial=True,
                                       model_name=m) for m in ("base", "stage2")}
    assert results["base"]["categories"]["overall"]["metrics"]["exact_match"]["score"] == pytest.approx(0.3)
    assert results["stage2"]["categories"]["overall"]["metrics"]["exact_match"]["score"] == pytest.approx(5 / 14)
    md = write_tables(results, tmp_path / "t")["md"].read_text()
    assert "## overall (n = base 20, stage2 14)" in md
    assert "**" not in _row(md, "exact match") and "**" not in _row(md, "closed accuracy")
    assert "no best marked: the models were scored on different numbers of samples" in md


def test_pixel_budget_per_model_and_difference_flagged(tmp_path):
    from eval.evaluate import evaluate_models
    from eval.tables import pixel_budget_warning, write_tables

    pred_dir, mapping = write_partial_fixture(tmp_path)
    paths = {m: pred_dir / m / "predictions.jsonl" for m in ("base", "stage2")}
    results = evaluate_models(paths, mapping, n_boot=20, allow_partial=True)
    assert results["stage2"]["pixel_budget"]["max_pixels"] == 401408
    written = write_tables(results, tmp_path / "t")
    md = written["md"].read_text()
    assert "| pixel budget (min-max pixels) | 3136-1003520 | 3136-401408 |" in md
    assert "WARNING: the models saw images at different pixel budgets" in md
    data = json.loads(written["json"].read_text())
    assert data["pixel_budget"]["base"] == {"min_pixels": 3136, "max_pixels": 1003520,
                                            "source": "run_info.json image_processor.size"}
    assert data["pixel_budget_warning"].startswith("WARNING")

    from eval.evaluate import pixel_budget_of

    assert pixel_budget_of({"pixel_budget": {"min_pixels": 1, "max_pixels": 2}, "image_processor": {"size": {
        "shortest_edge": 3, "longest_edge": 4}}}) == {"min_pixels": 1, "max_pixels": 2,
                                                     "source": "run_info.json pixel_budget"}
    assert pixel_budget_of({"model": "m"}) is None
    same = {m: {**r, "pixel_budget": results["base"]["pixel_budget"]} for m, r in results.items()}
    assert pixel_budget_warning(same) is None
    unknown = {m: {**r, "pixel_budget": None if m == "stage2" else r["pixel_budget"]} for m, r in results.items()}
    assert "pixel budget unknown for stage2" in pixel_budget_warning(unknown)
