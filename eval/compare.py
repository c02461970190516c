"""Paired tests between models on the same sample ids: each model against the first (the base), per category, on
the category's headline metric (medvl.metrics.registry.COMPARED_ON)."""
from __future__ import annotations

from typing import Mapping

from medvl.metrics import stats
from medvl.metrics.registry import COMPARED_ON


def headline_metric(category_result: dict) -> str | None:
    """The metric a category is compared on: closed accuracy, else mean IoU (grounding), else token F1."""
    mets = category_result["metrics"]
    for m in COMPARED_ON:
        if m in mets and mets[m].get("per_sample") is not None:
            return m
    return None


def compare_models(results_by_model: Mapping[str, dict], *, metric: str | None = None, n_resamples: int = 10000,
                   seed: int = 0) -> dict:
    """Paired test of each model against the first (the base) on each category's headline metric.

    Scores are paired by sample id (only ids both models answered). stats.paired_test picks exact McNemar for
    0/1 scores and a paired bootstrap otherwise. Returns {"base", "by_model": {model: {category: test dict
    with "metric", or {"skipped": reason}}}}.
    """
    names = list(results_by_model)
    if not names:
        raise ValueError("no models to compare")
    base = results_by_model[names[0]]
    out: dict = {"base": names[0], "by_model": {}}
    for name in names[1:]:
        res, per_cat = results_by_model[name], {}
        for cat, bcat in base["categories"].items():
            mcat = res["categories"].get(cat)
            if mcat is None:
                continue
            m = metric or headline_metric(bcat)
            if m is None or m not in mcat["metrics"] or m not in bcat["metrics"]:
                per_cat[cat] = {"metric": m, "skipped": f"{m} not available for both models"}
                continue
            a = dict(zip(bcat["ids"], bcat["metrics"][m]["per_sample"] or []))
            b = dict(zip(mcat["ids"], mcat["metrics"][m]["per_sample"] or []))
            common = [i for i in bcat["ids"] if a.get(i) is not None and b.get(i) is not None]
            if len(common) < 2:
                per_cat[cat] = {"metric": m, "skipped": f"{len(common)} paired sample(s), a test needs >= 2"}
                continue
            t = stats.paired_test([a[i] for i in common], [b[i] for i in common], n_resamples=n_resamples, seed=seed)
            per_cat[cat] = {"metric": m, **t}
        out["by_model"][name] = per_cat
    return out
