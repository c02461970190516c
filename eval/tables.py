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
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Mapping

from medvl.jsonio import atomic_write_text, write_json

from eval.coverage import ALLOW_FLAG, describe
from eval.evaluate import BLEU, GROUNDING, HEADLINE, METRIC_INFO, VIEWER_SIDE_DATASETS, compare_models

TEXT_ROWS = ("closed_accuracy", "yes_no_precision", "yes_no_recall", "yes_no_f1", "exact_match", "soft_match",
             "substring_match", "word_overlap", "word_contain", "word_precision", "word_recall", "word_f1",
             "char_precision", "char_recall", "char_f1", "rouge_1", "rouge_l", "bleu1", "bleu4", "meteor", "cider",
             "bertscore_f1")
_HIDE_WHEN_ALL_NA = {"closed_accuracy", "yes_no_precision", "yes_no_recall", "yes_no_f1"}
MISSING, UNAVAILABLE = "-", "unavailable (see notes)"


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
    from eval.evaluate import category_order

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
        label, higher, _ = METRIC_INFO[metric]
        present = [c for c in cats if c]
        if all(metric not in c["metrics"] and metric not in c.get("unavailable", {}) and
               metric not in c.get("not_applicable", {}) for c in present):
            continue  # never asked for (e.g. BERTScore without a model)
        if metric in _HIDE_WHEN_ALL_NA and all(metric in c.get("not_applicable", {}) for c in present):
            continue
        cells = [_cell(metric, c) for c in cats]
        best = _best([v for _, v in cells], higher) if same_n else [False] * len(cells)
        rows.append((label, [t for t, _ in cells], best))
        for c in present:
            if metric in c.get("not_applicable", {}) and metric not in c["metrics"]:
                na_notes.setdefault(c["not_applicable"][metric], []).append(label)
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
            rows.append((f"Δ {METRIC_INFO[metric][0]} vs {base} (paired)", cells, [False] * len(models)))
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


def _budget_text(b: dict | None) -> str:
    return f"{b['min_pixels']}-{b['max_pixels']}" if b else "unknown"


def pixel_budget_warning(results: Mapping[str, dict]) -> str | None:
    """A loud line when the models' images were resized within different pixel budgets (or one is unknown)."""
    budgets = {m: r.get("pixel_budget") for m, r in results.items()}
    known = {(b["min_pixels"], b["max_pixels"]) for b in budgets.values() if b}
    unknown = [m for m, b in budgets.items() if not b]
    if len(known) > 1:
        return ("WARNING: the models saw images at different pixel budgets (min-max pixels: "
                + ", ".join(f"{m} {_budget_text(b)}" for m, b in budgets.items()) + "); a difference between "
                "them may come from image resolution, not training. Regenerate with one --min_pixels/--max_pixels "
                "for every model.")
    if unknown and len(results) > 1:
        return (f"WARNING: pixel budget unknown for {', '.join(unknown)} (run_info.json does not record it): "
                "it cannot be confirmed that every model saw the same image sizes.")
    return None


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
    rows.append(("pixel budget (min-max pixels)", [_budget_text(results[m].get("pixel_budget")) for m in models]))
    return {"title": "models", "n_text": "test-set coverage and image pixel budget; see the notes", "header": models,
            "rows": [(label, cells, [False] * len(models)) for label, cells in rows], "notes": []}


def _perplexity_section(results: Mapping[str, dict]) -> dict | None:
    models = list(results)
    ppls = [results[m].get("perplexity") for m in models]
    if not any(ppls):
        return None
    keys = ["overall"] + sorted({k for p in ppls if p for k in (p.get("by_category") or {})})
    rows = []
    for key in keys:
        vals = []
        for p in ppls:
            entry = None if not p else (p.get("overall") if key == "overall" else (p.get("by_category") or {}).get(key))
            vals.append(entry)
        nums = [e.get("ppl") if e else None for e in vals]
        cells = [MISSING if e is None else f"{e['ppl']:.3f} ({e.get('tokens', '?')} tok)" for e in vals]
        rows.append((key, cells, _best(nums, higher=False)))
    return {"title": "perplexity", "n_text": "of the reference answers; lower is better", "first_column": "category",
            "header": models, "rows": rows,
            "notes": ["perplexity = exp(sum of token NLL / number of answer tokens) per category, from perplexity.json"]}


def _notes(results: Mapping[str, dict], comparisons: dict, shown: set[str]) -> list[str]:
    models = list(results)
    first = results[models[0]]["settings"]
    warning = pixel_budget_warning(results)
    notes = coverage_notes(results) + ([warning] if warning else []) + [
        "What each metric counts, which tokens and references, categories and coverage: docs/measurement.md.",
        "Pixel budget (min-max pixels an image is resized within, from run_info.json): "
        + ", ".join(f"{m} {_budget_text(results[m].get('pixel_budget'))}" for m in models) + ".",
        f"Headline metrics ({', '.join(METRIC_INFO[m][0] for m in HEADLINE)}) "
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
            by_reason.setdefault(why, []).append(METRIC_INFO.get(metric, (metric,))[0])
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
    notes += [f"  {METRIC_INFO[m][0]}: {METRIC_INFO[m][2]}" for m in METRIC_INFO if m in shown]
    return notes


def build_sections(results: Mapping[str, dict], comparisons: dict | None = None) -> tuple[list[dict], list[str]]:
    """The tables (as plain data) and the note lines; both renderers read these."""
    if not results:
        raise ValueError("no results to tabulate")
    comparisons = comparisons if comparisons is not None else (compare_models(results) if len(results) > 1 else {})
    sections = [_models_section(results)] + [_section(c, results, comparisons) for c in _categories(results)]
    ppl = _perplexity_section(results)
    if ppl:
        sections.append(ppl)
    label_to_metric = {v[0]: k for k, v in METRIC_INFO.items()}
    shown = {label_to_metric[r[0]] for s in sections for r in s["rows"] if r[0] in label_to_metric}
    return sections, _notes(results, comparisons, shown)


# ------------------------------------------------------------------------------------------------ renderers
def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(sections: list[dict], notes: list[str]) -> str:
    out = ["# Model comparison", "", "Best value per row in **bold**. Columns are models; the first is the base.", ""]
    for s in sections:
        head = [s.get("first_column", "metric")] + list(s["header"])
        out += [f"## {s['title']} ({s['n_text']})", "", "| " + " | ".join(map(_md_escape, head)) + " |",
                "|---|" + "---|" * len(s["header"])]
        for label, cells, best in s["rows"]:
            cells = [f"**{c}**" if b else c for c, b in zip(cells, best)]
            out.append(f"| {_md_escape(label)} | " + " | ".join(map(_md_escape, cells)) + " |")
        out.append("")
        if s["notes"]:
            out += [f"- {n}" for n in s["notes"]] + [""]
    out += ["## Notes", ""]
    out += [f"- {n}" if not n.startswith("  ") else f"  - {n.strip()}" for n in notes]
    return "\n".join(out) + "\n"


def render_text(sections: list[dict], notes: list[str]) -> str:
    out = ["MODEL COMPARISON  (best value per row marked with *; the first model is the base)", ""]
    for s in sections:
        rows = [(s.get("first_column", "metric"), s["header"])] + [(label, [c + ("*" if b else "") for c, b in zip(cells, best)])
                                            for label, cells, best in s["rows"]]
        widths = [max(len(r[0]) for r in rows)] + [max(len(r[1][j]) for r in rows) for j in range(len(s["header"]))]
        title = f"{s['title']} ({s['n_text']})"
        out += [title, "=" * len(title)]
        for k, (label, cells) in enumerate(rows):
            out.append("  ".join([label.ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells, widths[1:])]).rstrip())
            if k == 0:
                out.append("  ".join("-" * w for w in widths))
        out += [f"  note: {n}" for n in s["notes"]] + [""]
    out += ["NOTES", "====="]
    for n in notes:
        indent = "    " if n.startswith("  ") else "  "
        out += textwrap.wrap(n.strip(), 110, initial_indent=indent + ("" if indent == "    " else "- "),
                             subsequent_indent=indent + "  ")
    return "\n".join(out) + "\n"


def compact_overall(results: Mapping[str, dict], category: str = "overall") -> str:
    """A few headline numbers per model, one line each (for stdout)."""
    cols = ("closed_accuracy", "exact_match", "word_f1", "rouge_l", "bertscore_f1")
    models = list(results)
    lines = []
    head = ["model", "n"] + [METRIC_INFO[c][0] for c in cols] + ["mean IoU"]
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


def write_tables(results: Mapping[str, dict], out_dir: str | os.PathLike, comparisons: dict | None = None) -> dict[str, Path]:
    """Write model_comparison_tables.md/.txt and evaluation_metrics.json atomically; return their paths."""
    out_dir = Path(out_dir)
    comparisons = comparisons if comparisons is not None else (compare_models(results) if len(results) > 1 else {})
    sections, notes = build_sections(results, comparisons)
    paths = {"md": out_dir / "model_comparison_tables.md", "txt": out_dir / "model_comparison_tables.txt",
             "json": out_dir / "evaluation_metrics.json"}
    atomic_write_text(paths["md"], render_markdown(sections, notes))
    atomic_write_text(paths["txt"], render_text(sections, notes))
    write_json(paths["json"], {"models": list(results), "base": list(results)[0], "comparisons": comparisons,
                               "metric_info": {k: {"label": v[0], "higher_is_better": v[1], "definition": v[2]}
                                               for k, v in METRIC_INFO.items()},
                               "coverage": {m: r.get("coverage") for m, r in results.items()},
                               "pixel_budget": {m: r.get("pixel_budget") for m, r in results.items()},
                               "pixel_budget_warning": pixel_budget_warning(results),
                               "results": dict(results)})
    return paths
