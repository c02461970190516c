"""The pixel budget each model's images were resized within, and a loud warning when the models differ.

Why: two models that saw images at different resolutions are not compared on training alone; every table, the
report header and the notes show each model's budget.
"""
from __future__ import annotations

from typing import Mapping


def pixel_budget_of(run_info: dict | None) -> dict | None:
    """{"min_pixels", "max_pixels", "source"}: the range the model's images were resized into, from run_info.json
    (its pixel_budget, else the image processor's size of older runs); None when run_info does not say."""
    ri = run_info or {}
    for source, d, lo, hi in (("pixel_budget", ri.get("pixel_budget"), "min_pixels", "max_pixels"),
                              ("image_processor.size", (ri.get("image_processor") or {}).get("size"),
                               "shortest_edge", "longest_edge")):
        if isinstance(d, Mapping) and d.get(lo) and d.get(hi):
            return {"min_pixels": int(d[lo]), "max_pixels": int(d[hi]), "source": f"run_info.json {source}"}
    return None


def budget_text(b: dict | None) -> str:
    """"min-max" pixels of a budget, "unknown" when run_info did not record it."""
    return f"{b['min_pixels']}-{b['max_pixels']}" if b else "unknown"


def pixel_budget_warning(results: Mapping[str, dict]) -> str | None:
    """A loud line when the models' images were resized within different pixel budgets (or one is unknown)."""
    budgets = {m: r.get("pixel_budget") for m, r in results.items()}
    known = {(b["min_pixels"], b["max_pixels"]) for b in budgets.values() if b}
    unknown = [m for m, b in budgets.items() if not b]
    if len(known) > 1:
        return ("WARNING: the models saw images at different pixel budgets (min-max pixels: "
                + ", ".join(f"{m} {budget_text(b)}" for m, b in budgets.items()) + "); a difference between "
                "them may come from image resolution, not training. Regenerate with one --min_pixels/--max_pixels "
                "for every model.")
    if unknown and len(results) > 1:
        return (f"WARNING: pixel budget unknown for {', '.join(unknown)} (run_info.json does not record it): "
                "it cannot be confirmed that every model saw the same image sizes.")
    return None
