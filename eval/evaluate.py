"""Score one model's predictions.jsonl per question category, with CIs, per-sample scores and paired tests.

    result = evaluate_predictions("result/predictions/stage2/predictions.jsonl", "data/type_mapping.json", None)
    comparisons = compare_models({"base": r_base, "stage2": r_stage2})

Why: a single overall number hides where fine-tuning helped (yes/no vs modality vs open-ended) and how sure we are.
Every category gets every text metric that applies to it (medvl.metrics.registry), the headline metrics get a
bootstrap 95% CI, and per-sample scores are kept (aligned by id) so `compare_models` can run paired tests.

Categories (medvl.categories.category_names; a category with zero samples is left out):
  overall              every VQA question (task "vqa" or unset). Captions and grounding are scored separately:
                       a caption is not an answer and a grounding answer is a box, so mixing them in would
                       change "overall" with the share of those tasks.
  closed, closed/<t>   closed questions, by closed_type t in yes_no | modality | position | general
  open                 open-ended questions
  caption              task "caption" (text metrics)
  grounding            task "grounding" (box metrics, eval/grounding_scoring.py)
  region_classification, region_caption
                       the region tasks (a box in the question, a label/caption as answer): text metrics, part of
                       grounding work, never in overall
  dataset/<name>       per dataset (VQA and captions), when more than one dataset is present
  native/<field>/<v>   the dataset's own category (VQA-RAD question_type, SLAKE content_type, ...), VQA only

The pieces: eval/predictions.py (reading the run's files), eval/categorize.py (categories), eval/text_scoring.py
(which metric applies where; text metrics), eval/grounding_scoring.py (boxes), eval/compare.py (paired tests),
eval/coverage.py (test-set coverage), eval/pixel_budget.py.

Coverage: the test set is the type mapping's ids. Predictions that lack some of them (failed in run_info.json, or
missing) raise PartialCoverage naming the model and its counts; allow_partial=True scores them, and evaluate_models
then scores every model on the ids all of them answered.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Mapping

from tqdm import tqdm

from medvl.jsonio import DataError, read_json
from medvl.metrics.meteor import MeteorSession
from medvl.metrics.registry import TEXT
from eval import coverage
from eval.categorize import NATIVE_FIELDS, assign_categories, category_order
from eval.compare import compare_models, headline_metric
from eval.grounding_scoring import grounding_category
from eval.pixel_budget import pixel_budget_of
from eval.predictions import (accepted_references, load_predictions, load_type_mapping,
                              read_run_info, resolve_family)
from eval.text_scoring import Collector, text_categories

CocoSession = MeteorSession  # the name callers of evaluate_predictions(session=...) know
# the evaluation API, wherever each piece lives
__all__ = ["evaluate_predictions", "evaluate_models", "compare_models", "headline_metric", "assign_categories",
           "category_order", "NATIVE_FIELDS", "load_predictions", "load_type_mapping", "accepted_references",
           "read_run_info", "resolve_family", "pixel_budget_of", "CocoSession", "MeteorSession"]


def evaluate_predictions(pred_path: str | os.PathLike, type_mapping, family=None, *, bertscore_model: str | None = None,
                         bertscore_layers: int | None = None, allow_missing: bool = False, n_boot: int = 1000,
                         seed: int = 0, session: MeteorSession | None = None, model_name: str | None = None,
                         allow_partial: bool = False, only_ids: set[str] | None = None) -> dict:
    """All metrics of one predictions.jsonl, per category (see the module docstring).

    Predictions that cover less than the type mapping's ids raise PartialCoverage unless allow_partial;
    only_ids scores just those ids (evaluate_models: the ids every model answered).

    type_mapping: path to type_mapping.json, or its dict. family: registry name / ModelFamily / None (read
    run_info.json). session: a shared MeteorSession (one METEOR JVM for several models); None opens and closes one.
    Returns {"model", "pred_path", "family", "run_info", "n_predictions", "categories": {cat: {"n", "ids",
    "metrics": {name: {"score", "per_sample", ["ci"], ["note"]}}, "not_applicable": {name: reason},
    "unavailable": {name: reason}, ...}}, "unavailable", "bertscore", "perplexity", "data_issues", "settings"}.
    """
    pred_path = Path(pred_path)
    rows = load_predictions(pred_path)
    run_info = read_run_info(pred_path)
    fam = resolve_family(family, run_info, pred_path)
    mapping = load_type_mapping(type_mapping)
    name = model_name or pred_path.parent.name
    cov = coverage.coverage((r["id"] for r in rows), mapping, run_info)
    coverage.check({name: cov}, allow_partial)
    n_predictions = len(rows)
    if only_ids is not None:
        rows = [r for r in rows if r["id"] in only_ids]
        if not rows:
            raise DataError(f"{pred_path}: none of its ids is among the ids every model answered")
        if cov:
            cov["n_compared"] = len(rows)
    text_rows = [r for r in rows if r["task"] != "grounding"]
    ground_rows = [r for r in rows if r["task"] == "grounding"]
    for r in text_rows:
        r["references"] = accepted_references(r, pred_path)
    col = Collector(allow_missing)
    categories, bert_info, issues = {}, None, Counter()
    own = session is None
    session = session or MeteorSession()
    try:
        if text_rows:
            cats, infos, issues = assign_categories(text_rows, mapping)
            if mapping and issues["missing_from_type_mapping"] == len(text_rows):
                raise DataError(f"{pred_path}: none of its ids is in the type mapping ({len(mapping)} ids); "
                                "is it the type_mapping.json of this test set?")
            categories, bert_info = text_categories(
                text_rows, infos, cats, bertscore_model=bertscore_model, bertscore_layers=bertscore_layers,
                session=session, n_boot=n_boot, seed=seed, col=col)
    finally:
        if own:
            session.close()
    if ground_rows:
        categories["grounding"] = grounding_category(ground_rows, fam, n_boot=n_boot, seed=seed, pred_path=pred_path,
                                                     mapping=mapping)
    for cat, res in categories.items():
        res["unavailable"] = {m: why for m, why in col.unavailable.items() if cat != "grounding" and m in TEXT}
    ppl_path = pred_path.parent / "perplexity.json"
    return {
        "model": name, "pred_path": str(pred_path), "coverage": cov, "pixel_budget": pixel_budget_of(run_info),
        "family": fam.name if fam else None, "run_info": run_info, "n_predictions": n_predictions,
        "n_text": len(text_rows), "n_grounding": len(ground_rows),
        "categories": dict(sorted(categories.items(), key=lambda kv: category_order(kv[0]))),
        "unavailable": dict(col.unavailable), "bertscore": bert_info,
        "bertscore_requested": {"model": bertscore_model, "num_layers": bertscore_layers} if bertscore_model else None,
        "perplexity": read_json(ppl_path) if ppl_path.exists() else None,
        "data_issues": dict(issues),
        "settings": {"n_boot": n_boot, "seed": seed, "confidence": 0.95, "allow_missing": allow_missing,
                     "allow_partial": allow_partial},
    }


def evaluate_models(pred_paths: Mapping[str, str | os.PathLike], type_mapping, *, default_family=None,
                    allow_partial: bool = False, **kw) -> dict:
    """{model: evaluate_predictions(...)} in the given order, sharing one METEOR JVM across models.

    default_family is used only for a model whose run_info.json names no family (it never overrides one).
    Coverage is checked for every model before any is scored. With allow_partial, models whose ids differ are
    all scored on the ids every one of them answered (result["coverage"]["n_compared"]).
    """
    mapping = load_type_mapping(type_mapping)
    ids = {name: {r["id"] for r in load_predictions(path)} for name, path in pred_paths.items()}
    coverage.check({name: coverage.coverage(ids[name], mapping, read_run_info(path))
                    for name, path in pred_paths.items()}, allow_partial)
    common = set.intersection(*ids.values()) if ids else set()
    only = common if any(s != common for s in ids.values()) else None
    out = {}
    with MeteorSession() as session:
        for name, path in tqdm(pred_paths.items(), desc="metrics", unit="model", mininterval=1):
            known = (read_run_info(path) or {}).get("family")
            out[name] = evaluate_predictions(path, mapping, None if known else default_family, session=session,
                                             model_name=name, allow_partial=allow_partial, only_ids=only, **kw)
    return out
