"""The notes under the comparison tables (model_comparison_tables.md/.txt and the report): coverage, pixel budgets,
how each number is computed, what was unavailable and why, and the definition of every metric shown.
"""
from __future__ import annotations

from typing import Mapping

from medvl.metrics.registry import HEADLINE, METRICS, label
from eval.coverage import ALLOW_FLAG, describe
from eval.grounding_scoring import VIEWER_SIDE_DATASETS
from eval.pixel_budget import budget_text, pixel_budget_warning


def coverage_notes(results: Mapping[str, dict]) -> list[str]:
    """Which models lack test ids (with counts) and which samples the models are compared on."""
    covs = {m: r.get("coverage") for m, r in results.items()}
    if not any(covs.values()):
        return ["Coverage: not checked (no type mapping, so the test set is unknown)."]
    short = {m: c for m, c in covs.items() if c and not c["complete"]}
    if not short:
        return [f"Coverage: every model answered all {next(c for c in covs.values() if c)['n_test']} test ids."]
    lines = [f"PARTIAL COVERAGE ({ALLOW_FLAG}): {describe(m, c)}." for m, c in short.items()]
    compared = {c["n_compared"] for c in covs.values() if c and "n_compared" in c}
    if compared:
        lines.append(f"Every model is scored on the {min(compared)} ids all the models answered, not on the whole "
                     "test set.")
    else:
        lines.append("The models are scored on the ids each answered; no best is marked where n differs.")
    return lines


def build_notes(results: Mapping[str, dict], comparisons: dict, shown: set[str]) -> list[str]:
    """The note lines under the tables: coverage, pixel budgets, how each number is made, BERTScore setup, what
    was unavailable and why, data issues, run settings, and the definition of each metric shown."""
    models = list(results)
    first = results[models[0]]["settings"]
    warning = pixel_budget_warning(results)
    notes = coverage_notes(results) + ([warning] if warning else []) + [
        "What each metric counts, which tokens and references, categories and coverage: docs/measurement.md.",
        "Pixel budget (min-max pixels an image is resized within, from run_info.json): "
        + ", ".join(f"{m} {budget_text(results[m].get('pixel_budget'))}" for m in models) + ".",
        f"Headline metrics ({', '.join(label(m) for m in HEADLINE)}) "
        f"show the mean and its {int(first['confidence'] * 100)}% percentile-bootstrap CI [low, high] "
        f"({first['n_boot']} resamples, seed {first['seed']}).",
        f"Paired tests compare each model with the first ({models[0]}) on the same sample ids, on the category's "
        "headline metric (closed accuracy, else mean IoU for grounding, else token F1): exact McNemar for 0/1 "
        "scores, paired bootstrap otherwise. Δ = model - base.",
        "Categories: overall = every VQA question; closed/<type> follow type_mapping.json (data_process/data_trans.py: "
        "yes_no, modality, position, general); captions and grounding are scored separately, not in overall; "
        "native/<field>/<value> is the dataset's own question category.",
        "BLEU is reported on open-ended answers only: a category that holds closed answers shows 'n/a (closed)', "
        "because BLEU-4 of a correct one-word answer is meaningless (pycocoevalcap ~0, nltk smoothing-1 0.1778).",
        "METEOR is the jar's corpus score of each category; CIDEr takes its idf from each category's references, so "
        "CIDEr is not comparable across categories.",
        "Grounding: 'mean IoU (missing box = 0)' counts a sample without a parsable box as IoU 0 (the honest "
        "number); 'mean IoU (boxed samples only)' and the centre error average only samples with a box and are "
        "biased - read them with the box rate. Boxes are parsed in each model family's own format and converted "
        "to pixels of the original image before any comparison. With several reference boxes (one label, several "
        "regions) the predicted box is scored against the best-matching one (highest IoU; the nearest centre "
        "when none overlaps). Position match: over samples whose reference label names a side or level, whether "
        "the box centre lies there by image thirds; left/right mean the patient's side (radiological display), "
        f"except the image side for {', '.join(VIEWER_SIDE_DATASETS)}. Region tasks (region_classification, "
        "region_caption) are their own categories, not in overall.",
    ]
    described: dict[str, list[str]] = {}  # one line per distinct BERTScore setup
    for m in models:
        r = results[m]
        bs = r.get("bertscore")
        if bs:
            setup = (f"model {bs['model']}, layer {bs['num_layers']} ({bs['num_layers_source']}), rescaled with "
                     f"baseline: {bs['rescale_with_baseline']}, idf: {bs['idf']}, bert-score {bs['bert_score_version']}")
            described.setdefault(setup, []).append(f"{m} ({bs['n_empty_predictions']} empty predictions scored "
                                                   f"{bs['empty_prediction_score']})")
        elif r.get("bertscore_requested"):
            notes.append(f"BERTScore for {m}: requested ({r['bertscore_requested']['model']}) but unavailable.")
    for setup, who in described.items():
        notes.append(f"BERTScore: {setup}; for {', '.join(who)}.")
    if not any(r.get("bertscore_requested") for r in results.values()):
        notes.append("BERTScore: not computed (no --bertscore_model given).")
    for m in models:
        by_reason: dict[str, list[str]] = {}
        for metric, why in results[m].get("unavailable", {}).items():
            by_reason.setdefault(why, []).append(label(metric))
        for why, labels in by_reason.items():
            notes.append(f"UNAVAILABLE for {m}: {', '.join(labels)}: {why}")
    for m in models:
        if results[m].get("data_issues"):
            notes.append(f"Data issues for {m}: {results[m]['data_issues']}")
    for m in models:
        ri = results[m].get("run_info") or {}
        if ri:
            notes.append(f"{m}: family {results[m].get('family')}, checkpoint {ri.get('checkpoint')}, adapters "
                         f"{ri.get('adapters')}, decoding {ri.get('decoding')}, {results[m]['n_predictions']} predictions.")
    notes.append("Metric definitions:")
    notes += [f"  {m.label}: {m.definition}" for m in METRICS.values() if m.name in shown]
    return notes
