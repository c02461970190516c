"""One set of predictions scored under every protocol (medvl.metrics.protocols), with CIs, and the published
baselines of the same protocol and dataset beside them.

    detail = score_protocols(results, pred_paths, "data/type_mapping.json", ["strict", "medevalkit"])
    write_protocols(detail, "result")   # result/protocols.json + result/protocols_detail.json

protocols.json (a stable interface): {protocol: {model: {category: {metric: value}}}}, values in [0, 1].
Categories, as the protocol defines closed: overall, closed, open, dataset/<d>, dataset/<d>/closed|open.
protocols_detail.json adds per category n and the bootstrap CIs (medvl.metrics.stats), per model the preset its
predictions were made with (run_info.json), and per protocol its rules, meaning of closed, generation and source.
Only VQA questions are scored (the ids of each model's "overall" category: the ids every model answered when
--allow_partial), since the protocols define VQA scoring only.

Baselines (eval/baselines.json): cited numbers, each with its protocol, dataset, split, model, metric and source.
A protocol's table shows only the baselines of that protocol whose dataset is in the user's test set, beside the
user's score on the same dataset, category and metric; the full list names the protocol on every row.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Mapping

from medvl.jsonio import DataError, read_json, write_json
from medvl.metrics.protocols import PROTOCOLS, aggregate
from medvl.metrics.stats import bootstrap_ci
from eval.categorize import sample_info
from eval.predictions import accepted_references, load_predictions, load_type_mapping

BASELINES = Path(__file__).with_name("baselines.json")
_KIND_ORDER = {"overall": 0, "closed": 1, "open": 2}


def category_key(cat: str) -> tuple:
    parts = cat.split("/")
    if parts[0] != "dataset":
        return (0, "", _KIND_ORDER.get(cat, 9))
    return (1, parts[1], _KIND_ORDER.get(parts[2] if len(parts) > 2 else "overall", 9))


def score_protocols(results: Mapping[str, dict], pred_paths: Mapping[str, str | os.PathLike], type_mapping,
                    names: list[str], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """{protocol: {"title", "closed_means", "rules", "source", "generation", "datasets_note", "models": {model:
    {"preset", "categories": {cat: {"n", "metrics": {metric: {"score", ["ci"]}}}}}}}} for the models of `results`
    (eval.evaluate.evaluate_models) on their VQA ids."""
    mapping = load_type_mapping(type_mapping)
    samples = {}
    for model, path in pred_paths.items():
        overall = (results.get(model) or {}).get("categories", {}).get("overall")
        if not overall:
            continue  # no VQA questions: nothing a protocol scores
        keep = set(overall["ids"])
        rows = [r for r in load_predictions(path) if r["id"] in keep and r["task"] == "vqa"]
        issues: Counter = Counter()
        for r in rows:
            r["references"] = accepted_references(r, path)
            r["info"] = sample_info(r, mapping, issues)
        samples[model] = rows
    out = {}
    for name in names:
        p = PROTOCOLS[name]
        models = {}
        for model, rows in samples.items():
            scores = [p.score_sample(r["prediction"], r["references"], answer_type=r["info"]["answer_type"],
                                     dataset=r["info"]["dataset"], question=r.get("question") or "") for r in rows]
            per_cat = aggregate(scores, [r["info"]["dataset"] for r in rows])
            cats = {}
            for cat in sorted(per_cat, key=category_key):
                values = per_cat[cat]
                n = len(next(iter(values.values()))) if values else 0
                metrics = {}
                for m in p.metrics:
                    if m.name in values:
                        v = values[m.name]
                        entry = {"score": sum(v) / len(v)}
                        if m.ci:
                            ci = bootstrap_ci(v, n_resamples=n_boot, seed=seed)
                            entry["ci"] = {"low": ci["low"], "high": ci["high"], "confidence": ci["confidence"]}
                        metrics[m.name] = entry
                cats[cat] = {"n": n, "metrics": metrics}
            run_info = (results.get(model) or {}).get("run_info") or {}
            models[model] = {"preset": run_info.get("preset"), "categories": cats}
        g = p.generation
        out[name] = {"title": p.title, "closed_means": p.closed_means, "rules": p.rules, "source": p.source,
                     "datasets_note": p.datasets_note,
                     "metric_labels": {m.name: m.label for m in p.metrics},
                     "generation": {"system": g.system, "max_new_tokens": g.max_new_tokens, "suffixes": dict(g.suffixes),
                                    "decoding": g.decoding, "source": g.source},
                     "models": models}
    return out


def protocols_json(detail: Mapping[str, dict]) -> dict:
    """The stable shape: {protocol: {model: {category: {metric: value}}}}."""
    return {p: {m: {c: {k: v["score"] for k, v in cat["metrics"].items()} for c, cat in md["categories"].items()}
                for m, md in d["models"].items()} for p, d in detail.items()}


def write_protocols(detail: Mapping[str, dict], out_dir: str | os.PathLike) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"protocols": out_dir / "protocols.json", "protocols_detail": out_dir / "protocols_detail.json"}
    write_json(paths["protocols"], protocols_json(detail))
    write_json(paths["protocols_detail"], dict(detail))
    return paths


def read_detail(metrics_json: str | os.PathLike) -> dict | None:
    """protocols_detail.json next to an evaluation_metrics.json (the report re-rendered from files), if any."""
    p = Path(metrics_json).parent / "protocols_detail.json"
    return read_json(p) if p.exists() else None


# ------------------------------------------------------------------------------------------------ baselines
_FIELDS = ("source", "protocol", "dataset", "split", "model", "category", "metric", "value")


def load_baselines(path: str | os.PathLike = BASELINES) -> list[dict]:
    """The cited numbers; DataError names an entry that lacks a field or names an unknown protocol."""
    data = read_json(path)
    rows = data.get("baselines") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected {{\"baselines\": [...]}}")
    for i, b in enumerate(rows):
        missing = [f for f in _FIELDS if f not in b]
        if missing or b["protocol"] not in PROTOCOLS or not 0 <= b["value"] <= 1:
            raise DataError(f"{path}: baseline #{i} ({b.get('model')}): missing {missing}, unknown protocol "
                            f"{b.get('protocol')!r} or a value outside 0-1")
    return rows


def _fmt(entry: dict | None) -> str:
    if entry is None:
        return "-"
    text = f"{entry['score']:.3f}"
    ci = entry.get("ci")
    if ci and ci.get("low") is not None:
        text += f" [{ci['low']:.2f}, {ci['high']:.2f}]"
    return text


def _best(values: list[float | None]) -> list[bool]:
    nums = [v for v in values if v is not None]
    if len(nums) < 2 or max(nums) - min(nums) < 1e-12:
        return [False] * len(values)
    return [v is not None and abs(v - max(nums)) < 1e-12 for v in values]


def _datasets(d: dict) -> set[str]:
    return {c.split("/")[1] for md in d["models"].values() for c in md["categories"] if c.startswith("dataset/")}


def protocol_section(name: str, d: dict) -> dict:
    models = list(d["models"])
    several = len(_datasets(d)) > 1
    cats = sorted({c for md in d["models"].values() for c in md["categories"]
                   if several or not c.startswith("dataset/")}, key=category_key)
    rows = []
    for cat in cats:
        entries = [d["models"][m]["categories"].get(cat) for m in models]
        ns = {e["n"] for e in entries if e}
        for metric, label in d["metric_labels"].items():
            cells = [(e or {}).get("metrics", {}).get(metric) if e else None for e in entries]
            if all(c is None for c in cells):
                continue
            best = _best([round(c["score"], 3) if c else None for c in cells]) if len(ns) == 1 else [False] * len(models)
            n_text = f"n={next(iter(ns))}" if len(ns) == 1 else "n=" + "/".join(str(e["n"]) if e else "0" for e in entries)
            rows.append((f"{cat} ({n_text}): {label}", [_fmt(c) for c in cells], best))
    presets = ", ".join(f"{m} {d['models'][m]['preset'] or 'unrecorded (made before presets)'}" for m in models)
    g = d["generation"]
    notes = [f"Closed means here: {d['closed_means']}. Rules: {d['rules']}.",
             f"Source: {d['source']}." + (f" {d['datasets_note'][0].upper()}{d['datasets_note'][1:]}." if d["datasets_note"] else ""),
             f"Generation convention of this protocol (eval.generate --preset {name}): system turn "
             f"{'the model default' if g['system'] is None else repr(g['system'])}; prompt suffix "
             f"{', '.join(repr(s) for s in g['suffixes'].values()) or 'none'}; {g['decoding']} ({g['source']}).",
             f"Predictions scored here were made with preset: {presets}."]
    other = [m for m in models if d["models"][m]["preset"] != name]
    if other:
        notes.append(f"{', '.join(other)}: predictions not made with preset {name}; the numbers follow this "
                     "protocol's scoring rules on prompts of another convention, so they are not the protocol's own "
                     "end-to-end numbers.")
    return {"title": f"protocol {name}", "n_text": f"closed = {d['closed_means']}; predictions from preset(s): "
            f"{', '.join(sorted({d['models'][m]['preset'] or 'unrecorded' for m in models}))}", "first_column": "category: metric",
            "header": models, "rows": rows, "notes": notes}


def baseline_section(name: str, d: dict, baselines: list[dict]) -> dict | None:
    """This protocol's published numbers for the datasets in the user's test set, beside the user's scores of the
    same dataset, category and metric (None when there are none)."""
    models = list(d["models"])
    present = _datasets(d)
    rows = []
    for b in baselines:
        if b["protocol"] != name or b["dataset"] not in present:
            continue
        cat = f"dataset/{b['dataset']}" + ("" if b["category"] == "overall" else f"/{b['category']}")
        mine = [d["models"][m]["categories"].get(cat, {}).get("metrics", {}).get(b["metric"]) for m in models]
        label = d["metric_labels"].get(b["metric"], b["metric"])
        rows.append((f"{b['model']} ({b['setting']})" if b.get("setting") else b["model"],
                     [f"{b['dataset']} {b['split']}, {b['category']}: {label}", f"{b['value']:.3f}",
                      *[_fmt(e) for e in mine], b["source_short"] if b.get("source_short") else b["source"]],
                     [False] * (3 + len(models))))
    if not rows:
        return None
    return {"title": f"published baselines, protocol {name}", "first_column": "published model",
            "n_text": f"cited numbers scored by the {name} protocol, beside your models' {name} scores of the same "
                      "dataset, category and metric",
            "header": ["dataset split, category: metric", "published", *models, "source"], "rows": rows,
            "notes": ["Published numbers come from the source's own runs (its prompts, decoding and test files); "
                      "a difference of a few points can come from those alone. Caveats per entry are in "
                      "eval/baselines.json."]}


def all_baselines_section(baselines: list[dict]) -> dict:
    """Every cited number with its protocol on the row (numbers of different protocols are not comparable)."""
    rows = [(b["model"], [b["protocol"], b["dataset"], b["split"], b["category"], b["metric"], f"{b['value']:.3f}",
                          b.get("setting", ""), b["source"]], [False] * 8) for b in baselines]
    return {"title": "published baselines, every protocol", "first_column": "model",
            "n_text": "each row names its protocol; compare a row only with scores of the same protocol",
            "header": ["protocol", "dataset", "split", "category", "metric", "value", "setting", "source"],
            "rows": rows, "notes": []}


def protocol_sections(detail: Mapping[str, dict] | None, baselines: list[dict] | None = None,
                      with_all_baselines: bool = False) -> list[dict]:
    """The protocol tables (and their baselines) in protocol order, as eval/table_render.py sections."""
    if not detail:
        return []
    baselines = load_baselines() if baselines is None else baselines
    out = []
    for name, d in detail.items():
        out.append(protocol_section(name, d))
        b = baseline_section(name, d, baselines)
        if b:
            out.append(b)
    if with_all_baselines and baselines:
        out.append(all_baselines_section(baselines))
    return out
