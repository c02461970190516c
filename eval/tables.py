"""Comparison tables of several models: model_comparison_tables.md / .txt and evaluation_metrics.json.

    paths = write_tables({"base": r_base, "stage2": r_stage2}, "result")

Why this shape: one table per category (rows = metrics, columns = models) lets a reader see where a
fine-tuned model gains and whether the gain is larger than its confidence interval. The first model is the
base: each table ends with a paired test of every other model against it on the category's headline metric.
Cells never show a number that was not computed: a metric that does not apply reads "n/a" (reason under the
table), one whose backend failed reads "unavailable" (reason in the notes), a category a model lacks "-".
The md marks the best value per row in **bold**, the txt with a trailing "*" (only when models differ, and
never between models scored on different numbers of samples). The first table ("models") gives each model's
coverage of the test set and its pixel budget; a partial coverage or a pixel-budget difference leads the notes.
Rows, labels and directions come from the metric registry (medvl.metrics.registry); the notes are
eval/table_notes.py's, the renderers eval/table_render.py's.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from medvl.jsonio import atomic_write_text, write_json
from medvl.metrics.registry import BLEU, GROUNDING, HEADLINE, METRICS, TEXT, YES_NO, label
from eval.calibration import calibration_of, calibration_sections
from eval.categorize import category_order
from eval.compare import compare_models
from eval.old_results import upgrade_comparisons, upgrade_results
from eval.pixel_budget import budget_text, pixel_budget_warning
from eval.protocol_tables import protocol_sections
from eval.table_notes import build_notes, coverage_notes
from eval.table_render import render_markdown, render_text

TEXT_ROWS = tuple(m for m in TEXT if METRICS[m].table)  # the registry's order
# rows left out when the metric applies to no category of the table (a table of open questions has no closed rows)
_HIDE_WHEN_ALL_NA = {"closed_accuracy", *YES_NO}
MISSING, UNAVAILABLE = "-", "unavailable (see notes)"
__all__ = ["write_tables", "build_sections", "compact_overall", "render_markdown", "render_text", "coverage_notes",
           "pixel_budget_warning", "TEXT_ROWS"]

# ------------------------------------------------------------------------------------------------ cells
def _digits(metric: str) -> int:
    return 1 if metric.endswith("_px_boxed_only") else 3


def _fmt(metric: str, v: float) -> str:
    return f"{v:.{_digits(metric)}f}"


def _cell(metric: str, cat: dict | None) -> tuple[str, float | None]:
    """(text, number for best-of-row or None). The number is rounded as displayed, so equal-looking cells tie."""
    if cat is None:
        return MISSING, None
    m = cat["metrics"].get(metric)
    if m is not None:
        text = _fmt(metric, m["score"])
        ci = m.get("ci")
        if ci and ci.get("low") is not None:
            text += f" [{ci['low']:.2f}, {ci['high']:.2f}]"
        return text, round(m["score"], _digits(metric))
    if metric in cat.get("unavailable", {}):
        return UNAVAILABLE, None
    if metric in BLEU and metric in cat.get("not_applicable", {}):
        return "n/a (closed)", None
    return "n/a", None


def _best(values: list[float | None], higher: bool) -> list[bool]:
    nums = [v for v in values if v is not None]
    if len(nums) < 2 or max(nums) - min(nums) < 1e-12:
        return [False] * len(values)
    target = max(nums) if higher else min(nums)
    return [v is not None and abs(v - target) < 1e-12 for v in values]


# ------------------------------------------------------------------------------------------------ sections
def _categories(results: Mapping[str, dict]) -> list[str]:
    names = {c for r in results.values() for c in r["categories"]}
    return sorted(names, key=category_order)


def _section(cat: str, results: Mapping[str, dict], comparisons: dict) -> dict:
    models = list(results)
    cats = [results[m]["categories"].get(cat) for m in models]
    ns = [c["n"] if c else None for c in cats]
    if len({n for n in ns if n is not None}) == 1:
        n_text = f"n = {next(n for n in ns if n is not None)}"
    else:
        n_text = "n = " + ", ".join(f"{m} {n if n is not None else 0}" for m, n in zip(models, ns))
    same_n = len(set(ns)) == 1  # a best is marked only between models scored on the same samples
    rows, na_notes = [], {}
    for metric in (GROUNDING if cat == "grounding" else TEXT_ROWS):
        name, higher = METRICS[metric].label, METRICS[metric].higher_is_better
        present = [c for c in cats if c]
        if all(metric not in c["metrics"] and metric not in c.get("unavailable", {}) and
               metric not in c.get("not_applicable", {}) for c in present):
            continue  # never asked for (e.g. BERTScore without a model)
        if metric in _HIDE_WHEN_ALL_NA and all(metric in c.get("not_applicable", {}) for c in present):
            continue
        cells = [_cell(metric, c) for c in cats]
        best = _best([v for _, v in cells], higher) if same_n else [False] * len(cells)
        rows.append((name, [t for t, _ in cells], best))
        for c in present:
            if metric in c.get("not_applicable", {}) and metric not in c["metrics"]:
                na_notes.setdefault(c["not_applicable"][metric], []).append(name)
    base = comparisons.get("base")
    if base and len(models) > 1:
        tests = [comparisons["by_model"].get(m, {}).get(cat) for m in models]
        metric = next((t["metric"] for t in tests if t and t.get("metric")), None)
        if metric:
            cells = []
            for m, t in zip(models, tests):
                if m == base:
                    cells.append("(base)")
                elif t is None or "skipped" in t:
                    cells.append("n/a" if t is None else f"n/a: {t['skipped']}")
                else:
                    short = "McNemar" if "McNemar" in t["test"] else "bootstrap"
                    cells.append(f"{t['mean_diff']:+.3f} (p={t['p_value']:.3g}, {short})")
            rows.append((f"Δ {label(metric)} vs {base} (paired)", cells, [False] * len(models)))
    notes = [f"n/a: {', '.join(dict.fromkeys(ms))}: {why}" for why, ms in na_notes.items()]
    if not same_n and len(models) > 1:
        notes.append("no best marked: the models were scored on different numbers of samples")
    if cat == "grounding":
        for m, c in zip(models, cats):
            if c:
                notes.append(f"{m}: {c['n_boxed']} of {c['n']} samples produced a box ({c['family']} box format "
                             f"'{c['box_format']}', converted to pixels of the original image)"
                             + (f"; {c['issues']}" if c.get("issues") else ""))
    return {"title": cat, "n_text": n_text, "header": models, "rows": rows, "notes": notes}


def _models_section(results: Mapping[str, dict]) -> dict:
    """Per model: how much of the test set it covers and the pixel budget of its images (no best: facts)."""
    models = list(results)
    covs = [results[m].get("coverage") for m in models]
    rows = [("test ids scored", [f"{c['n_scored']} of {c['n_test']}" if c else "not checked" for c in covs]),
            ("failed (run_info.json)", [str(c["n_failed"]) if c else MISSING for c in covs]),
            ("missing from predictions", [str(c["n_missing"]) if c else MISSING for c in covs])]
    if any(c and "n_compared" in c for c in covs):
        rows.append(("compared on (ids every model answered)", [str(c.get("n_compared", MISSING)) if c else MISSING
                                                                for c in covs]))
    rows.append(("pixel budget (min-max pixels)", [budget_text(results[m].get("pixel_budget")) for m in models]))
    return {"title": "models", "n_text": "test-set coverage and image pixel budget; see the notes", "header": models,
            "rows": [(name, cells, [False] * len(models)) for name, cells in rows], "notes": []}


def _perplexity_section(results: Mapping[str, dict]) -> dict | None:
    """Corpus perplexity per model: every text answer scored (perplexity.json's "overall"), then per category
    (medvl.categories.category_names, the categories of the metric tables)."""
    models = list(results)
    ppls = [results[m].get("perplexity") for m in models]
    if not any(ppls):
        return None
    cats = sorted({k for p in ppls if p for k in (p.get("by_category") or {})}, key=category_order)
    rows = []
    for key in [None, *cats]:
        vals = [None if not p else p.get("overall") if key is None else (p.get("by_category") or {}).get(key)
                for p in ppls]
        nums = [e.get("ppl") if e else None for e in vals]
        cells = [MISSING if e is None else f"{e['ppl']:.3f} ({e.get('tokens', '?')} tok)" for e in vals]
        rows.append(("all text answers" if key is None else key, cells, _best(nums, higher=False)))
    return {"title": "perplexity", "n_text": "of the reference answers; lower is better", "first_column": "category",
            "header": models, "rows": rows,
            "notes": ["perplexity = exp(sum of token NLL / number of answer tokens) per category, from perplexity.json; "
                      "'all text answers' holds every answer scored (VQA, captions, region tasks), 'overall' the VQA "
                      "questions only, as in the metric tables"]}


def build_sections(results: Mapping[str, dict], comparisons: dict | None = None) -> tuple[list[dict], list[str]]:
    """The tables (as plain data) and the note lines; both renderers read these. Results written with an older
    metric name (word_f1) are read under the current one (eval/old_results.py)."""
    if not results:
        raise ValueError("no results to tabulate")
    results = upgrade_results(results)
    comparisons = upgrade_comparisons(comparisons) if comparisons is not None else None
    comparisons = comparisons if comparisons is not None else (compare_models(results) if len(results) > 1 else {})
    sections = [_models_section(results)] + [_section(c, results, comparisons) for c in _categories(results)]
    ppl = _perplexity_section(results)
    if ppl:
        sections.append(ppl)
    sections += calibration_sections(results, _best)
    label_to_metric = {m.label: m.name for m in METRICS.values()}
    shown = {label_to_metric[r[0]] for s in sections for r in s["rows"] if r[0] in label_to_metric}
    return sections, build_notes(results, comparisons, shown)


def compact_overall(results: Mapping[str, dict], category: str = "overall") -> str:
    """A few headline numbers per model, one line each (for stdout)."""
    cols = tuple(m for m in HEADLINE if m in TEXT)
    results = upgrade_results(results)
    models = list(results)
    lines = []
    head = ["model", "n"] + [label(c) for c in cols] + ["mean IoU"]
    table = [head]
    for m in models:
        r = results[m]
        cat = r["categories"].get(category)
        closed = r["categories"].get("closed")
        g = r["categories"].get("grounding")
        row = [m, str(cat["n"]) if cat else "-"]
        for c in cols:
            src = closed if c == "closed_accuracy" else cat
            row.append(_cell(c, src)[0] if src and (c in src["metrics"] or c in src.get("unavailable", {})) else "-")
        row.append(_cell("mean_iou", g)[0] if g else "-")
        table.append(row)
    widths = [max(len(r[j]) for r in table) for j in range(len(head))]
    for r in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    lines.append("(closed accuracy over the 'closed' category; other columns over 'overall'; mean IoU counts a "
                 "missing box as 0)")
    return "\n".join(lines)


def write_tables(results: Mapping[str, dict], out_dir: str | os.PathLike, comparisons: dict | None = None,
                 protocols: Mapping[str, dict] | None = None, warnings: list[str] | None = None) -> dict[str, Path]:
    """Write model_comparison_tables.md/.txt and evaluation_metrics.json atomically; return their paths.
    protocols: eval.protocol_tables.score_protocols(...) -> one table per protocol (and its published baselines)
    after the metric tables. warnings: lines shown above every table (eval.leakage_notes.leakage_warnings)."""
    out_dir = Path(out_dir)
    results = upgrade_results(results)
    comparisons = upgrade_comparisons(comparisons) if comparisons is not None else None
    comparisons = comparisons if comparisons is not None else (compare_models(results) if len(results) > 1 else {})
    sections, notes = build_sections(results, comparisons)
    sections = sections + protocol_sections(protocols)
    paths = {"md": out_dir / "model_comparison_tables.md", "txt": out_dir / "model_comparison_tables.txt",
             "json": out_dir / "evaluation_metrics.json"}
    warnings = list(warnings or [])
    atomic_write_text(paths["md"], render_markdown(sections, notes, warnings))
    atomic_write_text(paths["txt"], render_text(sections, notes, warnings))
    write_json(paths["json"], {"models": list(results), "base": list(results)[0], "comparisons": comparisons,
                               "metric_info": {m.name: {"label": m.label, "higher_is_better": m.higher_is_better,
                                                        "applies_to": m.applies_to, "definition": m.definition}
                                               for m in METRICS.values()},
                               "coverage": {m: r.get("coverage") for m, r in results.items()},
                               "pixel_budget": {m: r.get("pixel_budget") for m, r in results.items()},
                               "pixel_budget_warning": pixel_budget_warning(results),
                               "leakage_warnings": warnings,
                               "calibration": {m: calibration_of(r) for m, r in results.items()},
                               "results": dict(results)})
    return paths
