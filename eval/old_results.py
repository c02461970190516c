"""Results written before a metric was renamed (evaluation_metrics.json with `word_f1`, now `token_f1`) read with the
current names (medvl.metrics.registry.OLD_NAMES), so the tables and the report re-render old runs unchanged.

Both functions return new dicts (the input, e.g. a loaded file, is left as it was) and leave current results as
they are.
"""
from __future__ import annotations

from typing import Mapping

from medvl.metrics.registry import OLD_NAMES, canonical


def _rename_keys(d: Mapping) -> dict:
    return {canonical(k): v for k, v in d.items()}


def upgrade_result(res: Mapping) -> dict:
    """One model's result with every metric key under the current name."""
    cats = {}
    for cat, c in (res.get("categories") or {}).items():
        c = dict(c)
        for key in ("metrics", "not_applicable", "unavailable"):
            if key in c:
                c[key] = _rename_keys(c[key])
        cats[cat] = c
    return {**res, "categories": cats, "unavailable": _rename_keys(res.get("unavailable") or {})}


def upgrade_results(results: Mapping[str, dict]) -> dict[str, dict]:
    """{model: result} with every metric key under the current name."""
    return {model: upgrade_result(res) for model, res in results.items()}


def upgrade_comparisons(comparisons: Mapping | None) -> dict:
    """Paired tests with the compared metric under its current name."""
    if not comparisons:
        return dict(comparisons or {})
    by_model = {m: {cat: ({**t, "metric": canonical(t["metric"])} if t.get("metric") in OLD_NAMES else t)
                    for cat, t in cats.items()} for m, cats in (comparisons.get("by_model") or {}).items()}
    return {**comparisons, "by_model": by_model}
