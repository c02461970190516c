"""One self-contained HTML report: tables with CIs, training curves, plots and a per-sample gallery.

Written by `python result_statistic.py ... --html --test_data test.json`, or re-rendered from a finished
evaluation (no metric is recomputed) with this module:

examples:
  python -m eval.report --metrics result/evaluation_metrics.json --test_data eval_data/test.json
  python -m eval.report --metrics result/evaluation_metrics.json --test_data eval_data/test.json \\
      --runs outputs/qwen2vl2b --out result/report.html --max_samples 300

What is in it: the headline metric of every category with its 95% CI, every comparison table
(eval/tables.py, same cells as model_comparison_tables.md), the training curves of each stage read from the
TensorBoard event files (eval/curves.py; found through the evaluated adapters' run_summary.json, or --runs),
the bar charts (eval/plots.py), and a gallery: image, question, reference, each model's answer marked right or
wrong, reference boxes (meta.boxes, original pixels) and each model's boxes (parsed in its family's format by
medvl.families.parse_boxes) drawn on the image, with filters by category, dataset and correctness.

Right / wrong per sample, per model: closed questions by closed accuracy; open questions and captions by exact
match (token F1 shown beside it); grounding by IoU > 0.5 of the first box (a missing box is wrong).
Self-contained: images are JPEG thumbnails and plots PNGs, both base64 inline; CSS and the filter script are
inline; a Content-Security-Policy forbids loading anything else and allows only that script and style (by
sha256: an injected inline script, event handler or style attribute does not run). Written atomically.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

from tqdm import tqdm

from medvl.jsonio import DataError, atomic_write_text, read_json, read_records
from medvl.schema import image_list
from medvl.paths import OUTSIDE_ROOT, OutsideRoot, resolve_inside

# matplotlib's default colour cycle: a model has the same colour in the plots and in the gallery
MODEL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf")
REFERENCE_COLOUR = "#ffd60a"
RULES = ("closed questions: closed accuracy; open questions and captions: exact match after normalisation "
         "(token F1 shown); grounding: IoU > 0.5 of the first predicted box with the reference box (no box = wrong)")


# ------------------------------------------------------------------------------------------------ per-sample data
def per_sample_scores(result: dict) -> dict[str, dict[str, float]]:
    """{id: {metric: score}} from one model's evaluate_predictions result (the scores the tables averaged)."""
    out: dict[str, dict[str, float]] = {}
    cats = result["categories"]

    def take(cat: str, metric: str, key: str) -> None:
        c = cats.get(cat)
        entry = c["metrics"].get(metric) if c else None
        if entry and entry.get("per_sample") is not None:
            for sid, v in zip(c["ids"], entry["per_sample"]):
                if v is not None:
                    out.setdefault(sid, {})[key] = float(v)

    take("closed", "closed_accuracy", "closed_accuracy")
    for cat in ("overall", "caption"):
        take(cat, "exact_match", "exact_match")
        take(cat, "word_f1", "word_f1")
    take("grounding", "mean_iou", "iou")
    take("grounding", "iou_gt_0_5_rate", "iou_gt_0_5")
    take("grounding", "box_rate", "boxed")
    return out


def verdict(scores: dict[str, float] | None) -> tuple[bool | None, str]:
    """(right?, detail) by RULES; (None, reason) when the sample was not scored for this model."""
    if not scores:
        return None, "not scored"
    if "closed_accuracy" in scores:
        return scores["closed_accuracy"] >= 1.0, "closed accuracy"
    if "iou_gt_0_5" in scores:
        if not scores.get("boxed"):
            return False, "no parsable box"
        return scores["iou_gt_0_5"] >= 1.0, f"IoU {scores.get('iou', 0.0):.2f}"
    if "exact_match" in scores:
        return scores["exact_match"] >= 1.0, f"token F1 {scores.get('word_f1', 0.0):.2f}"
    return None, "not scored"


def sample_categories(results: Mapping[str, dict]) -> dict[str, list[str]]:
    """{id: [categories]} over every model (a model may lack a sample another has)."""
    out: dict[str, list[str]] = {}
    for res in results.values():
        for cat, c in res["categories"].items():
            for sid in c["ids"]:
                cats = out.setdefault(sid, [])
                if cat not in cats:
                    cats.append(cat)
    return out


def _pred_path(result: dict, metrics_json: Path | None) -> Path:
    p = Path(result["pred_path"])
    if p.exists() or metrics_json is None:
        return p
    alt = metrics_json.parent / "predictions" / result["model"] / "predictions.jsonl"  # result dir moved
    return alt if alt.exists() else p


def _size(value) -> tuple[float, float] | None:
    """(w, h) when value is two positive numbers; None otherwise (a [0, 0] size scales nothing: no box drawn)."""
    try:
        w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (w, h) if w > 0 and h > 0 else None


def _scale_box(xyxy, from_size, to_size) -> list[float]:
    if not from_size or list(from_size) == list(to_size):
        return [float(v) for v in xyxy]
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return [xyxy[0] * sx, xyxy[1] * sy, xyxy[2] * sx, xyxy[3] * sy]


def thumbnail(path: str, sample_id: str, max_side: int) -> tuple[str, tuple[int, int]]:
    """(data: URI of a JPEG thumbnail, original (w, h)). Same image reader as training (medvl.encoding)."""
    from medvl.encoding import load_image

    im = load_image(path, sample_id)
    size = im.size
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), size


def image_file(name: str, image_root: str | None, allow_outside_root: bool = False) -> str:
    """The file a record's image names, by the rule validation and training use (medvl.encoding.image_path):
    a relative name resolves under image_root or raises OutsideRoot; an absolute one is taken as written."""
    if os.path.isabs(name) or not image_root:
        return name
    return str(resolve_inside(image_root, name, allow_outside_root))


def gallery_samples(results: Mapping[str, dict], records: Sequence[dict], *, metrics_json: Path | None = None,
                    image_root: str | None = None, allow_outside_root: bool = False, max_samples: int | None = 1000,
                    seed: int = 0, thumb_side: int = 224, progress: bool = True) -> tuple[list[dict], list[str], dict]:
    """(samples, images as data URIs, info) for the gallery.

    Every id that any model answered, in test_data order; above max_samples a seeded random subset (stated in the
    page). An image that cannot be read, one outside the image root (never embedded: the page is meant to be
    sent), or an id missing from test_data is shown as such on its card and counted in info (never dropped
    silently)."""
    from eval.evaluate import load_predictions, resolve_family
    from medvl.families import parse_boxes

    models = list(results)
    rows = {m: {r["id"]: r for r in load_predictions(_pred_path(results[m], metrics_json))} for m in models}
    families = {m: resolve_family(None, results[m].get("run_info"), None) for m in models}
    scores = {m: per_sample_scores(results[m]) for m in models}
    cats = sample_categories(results)
    by_id = {str(r.get("id")): r for r in records}
    answered = {sid for m in models for sid in rows[m]}
    if by_id and not answered & set(by_id):
        raise DataError(f"none of the {len(answered)} predicted ids is in the test data ({len(by_id)} records); "
                        "is --test_data the file the predictions were made from?")
    order = [sid for sid in by_id if sid in answered] + sorted(answered - set(by_id))
    info = {"n_answered": len(order), "missing_from_test_data": sorted(answered - set(by_id)), "unreadable_images": {},
            "max_samples": max_samples, "seed": seed, "boxes_not_parsed": []}
    if max_samples is not None and len(order) > max_samples:
        keep = set(random.Random(seed).sample(order, max_samples))
        order = [sid for sid in order if sid in keep]
    images, image_index, samples = [], {}, []
    for sid in tqdm(order, desc="report gallery", disable=not progress, mininterval=1):
        rec = by_id.get(sid) or {}
        any_row = next(rows[m][sid] for m in models if sid in rows[m])
        meta = rec.get("meta") or {}
        paths = image_list(rec) if rec else []
        img, size = None, None
        if paths:
            p = paths[0]
            if p not in image_index:
                try:
                    uri, size = thumbnail(image_file(p, image_root, allow_outside_root), sid, thumb_side)
                    image_index[p] = (len(images), size)
                    images.append(uri)
                except OutsideRoot as e:
                    image_index[p] = (None, f"{e.reason}: {e}")
                except Exception as e:  # SampleError names the sample and the reason; shown on the card
                    image_index[p] = (None, str(e))
            idx, size = image_index[p]
            if idx is None:
                info["unreadable_images"][sid] = size
                size = None
            img = idx
        size = _size(size or any_row.get("image_size"))
        ref_boxes = []
        if size:
            for b in meta.get("boxes") or any_row.get("ref_boxes") or []:
                if isinstance(b, dict) and len(b.get("xyxy") or []) == 4:
                    from_size = _size(b.get("image_size")) if b.get("image_size") is not None else size
                    if from_size:
                        ref_boxes.append({"label": b.get("label"), "xyxy": _scale_box(b["xyxy"], from_size, size)})
                    else:
                        info["boxes_not_parsed"].append(f"reference:{sid}")
        answers = []
        for k, m in enumerate(models):
            row = rows[m].get(sid)
            ok, detail = verdict(scores[m].get(sid)) if row else (None, "no prediction")
            boxes = []
            row_size, input_size = (_size(row.get("image_size")), _size(row.get("input_size"))) if row else (None, None)
            if row and size and families[m] is not None and row_size and input_size:
                for label, xyxy in parse_boxes(families[m], row["prediction"], row_size, input_size):
                    boxes.append({"label": label, "xyxy": _scale_box(xyxy, row_size, size)})
            elif row and any_row.get("task") == "grounding":
                info["boxes_not_parsed"].append(f"{m}:{sid}")
            answers.append({"model": m, "colour": MODEL_COLOURS[k % len(MODEL_COLOURS)],
                            "text": row["prediction"] if row else None, "ok": ok, "detail": detail, "boxes": boxes})
        samples.append({"id": sid, "question": any_row.get("question") or "", "reference": any_row.get("reference", ""),
                        "task": any_row.get("task", "vqa"), "dataset": str(meta.get("dataset") or any_row.get("dataset")
                                                                               or "unknown"),
                        "categories": cats.get(sid, []), "image": img, "size": size, "n_images": len(paths),
                        "image_error": info["unreadable_images"].get(sid),
                        "in_test_data": sid in by_id, "ref_boxes": ref_boxes, "answers": answers})
    return samples, images, info


# ------------------------------------------------------------------------------------------------ HTML pieces
def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _tables_html(sections: list[dict]) -> str:
    parts = []
    for s in sections:
        head = "".join(f"<th>{_e(h)}</th>" for h in [s.get("first_column", "metric"), *s["header"]])
        body = []
        for label, cells, best in s["rows"]:
            tds = "".join(f'<td class="{"best" if b else ""}">{_e(c)}</td>' for c, b in zip(cells, best))
            body.append(f"<tr><th>{_e(label)}</th>{tds}</tr>")
        notes = "".join(f"<li>{_e(n)}</li>" for n in s["notes"])
        parts.append(f'<div class="tbl"><h3>{_e(s["title"])} <small>({_e(s["n_text"])})</small></h3>'
                     f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
                     + (f'<ul class="notes">{notes}</ul>' if notes else "") + "</div>")
    return "".join(parts)


def _svg_boxes(sample: dict) -> str:
    if not sample["size"] or not (sample["ref_boxes"] or any(a["boxes"] for a in sample["answers"])):
        return ""
    w, h = sample["size"]
    stroke = max(w, h) / 110  # about 2 px on the thumbnail whatever the original size
    shapes = []
    for b in sample["ref_boxes"]:
        x1, y1, x2, y2 = b["xyxy"]
        shapes.append(f'<rect class="ref" x="{x1:.1f}" y="{y1:.1f}" width="{x2 - x1:.1f}" height="{y2 - y1:.1f}" '
                      f'stroke="{REFERENCE_COLOUR}" stroke-width="{stroke:.2f}" stroke-dasharray="{2 * stroke:.2f}">'
                      f'<title>reference {_e(b["label"] or "")}</title></rect>')
    for a in sample["answers"]:
        for b in a["boxes"]:
            x1, y1, x2, y2 = b["xyxy"]
            shapes.append(f'<rect class="pred" data-model="{_e(a["model"])}" x="{x1:.1f}" y="{y1:.1f}" '
                          f'width="{max(x2 - x1, 0):.1f}" height="{max(y2 - y1, 0):.1f}" stroke="{a["colour"]}" '
                          f'stroke-width="{stroke:.2f}"><title>{_e(a["model"])} {_e(b["label"] or "")}</title></rect>')
    return f'<svg viewBox="0 0 {w:g} {h:g}" preserveAspectRatio="none">{"".join(shapes)}</svg>'


def _card(sample: dict) -> str:
    oks = " ".join(f"{a['model']}={'' if a['ok'] is None else int(a['ok'])}" for a in sample["answers"])
    if sample["image"] is not None:
        pic = f'<img data-im="{sample["image"]}" alt="image of {_e(sample["id"])}">'
    elif sample["image_error"]:
        what = "image not shown" if sample["image_error"].startswith(OUTSIDE_ROOT) else "image not readable"
        pic = f'<div class="noimg">{what}: {_e(sample["image_error"])}</div>'
    elif not sample["in_test_data"]:
        pic = '<div class="noimg">id not in the test data: no image</div>'
    else:
        pic = '<div class="noimg">no image</div>'
    more = f'<div class="more">+{sample["n_images"] - 1} more image(s); the first is shown</div>' \
        if sample["n_images"] > 1 else ""
    answers = []
    for a in sample["answers"]:
        mark = {True: ("ok", "✓"), False: ("bad", "✗"), None: ("na", "–")}[a["ok"]]
        text = "(no prediction)" if a["text"] is None else a["text"]
        answers.append(f'<tr class="{mark[0]}"><td class="m"><span class="sw {SWATCH[a["colour"]]}"></span>'
                       f'{_e(a["model"])}</td><td class="mk" title="{_e(a["detail"])}">{mark[1]}</td>'
                       f'<td>{_e(text)}<span class="det">{_e(a["detail"])}</span></td></tr>')
    return (f'<div class="card" data-cats="{_e("|".join(sample["categories"]))}" data-dataset="{_e(sample["dataset"])}" '
            f'data-ok="{_e(oks)}"><div class="pic">{pic}{_svg_boxes(sample)}</div>{more}'
            f'<div class="q"><b>Q</b> {_e(sample["question"])}</div>'
            f'<div class="ref"><b>Reference</b> {_e(sample["reference"])}</div>'
            f'<table class="ans">{"".join(answers)}</table>'
            f'<div class="id">{_e(sample["id"])} · {_e(sample["dataset"])} · {_e(sample["task"])}</div></div>')


def _options(values: Sequence[tuple[str, str]]) -> str:
    return "".join(f'<option value="{_e(v)}">{_e(label)}</option>' for v, label in values)


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
header{background:#17324d;color:#fff;padding:14px 24px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:2px 0;color:#d8e3ee}header p.warn{color:#17324d;background:#ffd60a;padding:4px 8px;font-weight:bold}nav a{color:#fff;margin-right:16px}
section{padding:10px 24px 18px;border-bottom:1px solid #ddd}h2{margin:10px 0}
.figs img{max-width:100%;border:1px solid #ddd;background:#fff;margin:4px 0}
.tbls{display:flex;flex-wrap:wrap;gap:14px}.tbl{background:#fff;border:1px solid #ddd;padding:6px 10px;max-width:100%;overflow-x:auto}
.tbl h3{margin:4px 0;font-size:15px}table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #eee;
text-align:right;white-space:nowrap}tbody th{text-align:left;font-weight:normal}td.best{font-weight:bold}
ul.notes{font-size:12px;color:#555;max-width:900px;white-space:normal}
.filters{position:sticky;top:0;background:#fafafa;padding:8px 0;z-index:2;display:flex;gap:14px;flex-wrap:wrap;align-items:center}
.legend span{margin-right:12px}.sw{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle;border-radius:2px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}.card.hide{display:none}
.pic{position:relative;width:224px;margin:0 auto}.pic img{display:block;width:224px;height:auto}
.pic svg{position:absolute;left:0;top:0;width:100%;height:100%}.pic rect{fill:none}
.noimg{width:224px;padding:20px 0;text-align:center;background:#eee;color:#a00;font-size:12px}
.q,.ref{margin:4px 0}.ref{color:#1a5d1a}.ans{width:100%;font-size:13px}.ans td{text-align:left;white-space:normal;vertical-align:top;overflow-wrap:anywhere}
.ans td.m{white-space:nowrap;width:1%}.ans td.mk{width:1%;font-weight:bold}.ok td.mk{color:#14852b}.bad td.mk{color:#c0262d}
.det{display:block;font-size:11px;color:#777}.id,.more{font-size:11px;color:#777}.issues{color:#a00}
"""

JS = """
(function(){
  var IM = JSON.parse(document.getElementById('images').textContent);
  document.querySelectorAll('img[data-im]').forEach(function(el){ el.src = IM[+el.getAttribute('data-im')]; });
  var cards = Array.prototype.slice.call(document.querySelectorAll('.card'));
  var fc = document.getElementById('f-cat'), fd = document.getElementById('f-ds'), fo = document.getElementById('f-ok');
  function oks(card){
    var out = {};
    card.getAttribute('data-ok').split(' ').forEach(function(kv){
      var i = kv.lastIndexOf('='); if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1); });
    return out;
  }
  function pass(card){
    if (fc.value && card.getAttribute('data-cats').split('|').indexOf(fc.value) < 0) return false;
    if (fd.value && card.getAttribute('data-dataset') !== fd.value) return false;
    if (!fo.value) return true;
    var o = oks(card), vals = Object.keys(o).map(function(k){ return o[k]; }).filter(function(v){ return v !== ''; });
    if (fo.value === 'all-right') return vals.length > 0 && vals.every(function(v){ return v === '1'; });
    if (fo.value === 'all-wrong') return vals.length > 0 && vals.every(function(v){ return v === '0'; });
    if (fo.value === 'disagree') return vals.indexOf('1') >= 0 && vals.indexOf('0') >= 0;
    var parts = fo.value.split(':');  // right:<model> / wrong:<model>
    return o[parts.slice(1).join(':')] === (parts[0] === 'right' ? '1' : '0');
  }
  function apply(){
    var n = 0;
    cards.forEach(function(c){ var ok = pass(c); c.classList.toggle('hide', !ok); if (ok) n++; });
    document.getElementById('shown').textContent = n + ' of ' + cards.length + ' samples shown';
  }
  [fc, fd, fo].forEach(function(el){ el.addEventListener('change', apply); });
  window.medvlFilter = function(cat, ds, ok){ fc.value = cat; fd.value = ds; fo.value = ok; apply();
    return cards.filter(function(c){ return !c.classList.contains('hide'); }).length; };
  apply();
})();
"""

# colour swatches by class: a style="" attribute would need style-src 'unsafe-inline'
SWATCH = {c: f"c{k}" for k, c in enumerate((*MODEL_COLOURS, REFERENCE_COLOUR))}
CSS += "".join(f".sw.{cls}{{background:{c}}}" for c, cls in SWATCH.items()) + "\n"


def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


# The page's own style and script, by hash: nothing else runs or styles it, even markup that got past escaping
# (an injected <script>, an onerror= handler, a style attribute). Both are constants, so the hashes are too.
CSP = (f"default-src 'none'; img-src data:; style-src {_sha256_source(CSS)}; script-src {_sha256_source(JS)}")


def render_html(results: Mapping[str, dict], comparisons: dict, samples: list[dict], images: list[str], info: dict,
                plots: list, runs, title: str = "Model comparison report") -> str:
    """The page. plots: eval.plots.Plot list (embedded as they are); runs: eval.curves.TrainingRun list."""
    from eval.tables import _budget_text, build_sections, pixel_budget_warning

    models = list(results)
    sections, notes = build_sections(results, comparisons)
    # the pixel budget beside every model name: images resized differently make answers incomparable
    budget = {m: f"{_budget_text(results[m].get('pixel_budget'))} px" for m in models}
    budget_warning = pixel_budget_warning(results)
    legend = "".join(f'<span><span class="sw {SWATCH[MODEL_COLOURS[k % len(MODEL_COLOURS)]]}"></span>'
                     f'{_e(m)} <small>({_e(budget[m])})</small></span>' for k, m in enumerate(models))
    legend += f'<span><span class="sw {SWATCH[REFERENCE_COLOUR]}"></span>reference box (dashed)</span>'
    all_cats = []
    for s in samples:
        all_cats += [c for c in s["categories"] if c not in all_cats]
    from eval.evaluate import category_order

    cat_opts = [("", "every category")] + [(c, c) for c in sorted(all_cats, key=category_order)]
    ds_opts = [("", "every dataset")] + [(d, d) for d in sorted({s["dataset"] for s in samples})]
    ok_opts = [("", "any correctness"), ("all-right", "every model right"), ("all-wrong", "every model wrong"),
               ("disagree", "models disagree")]
    for m in models:
        ok_opts += [(f"right:{m}", f"{m} right"), (f"wrong:{m}", f"{m} wrong")]
    issues = []
    if info["missing_from_test_data"]:
        issues.append(f"{len(info['missing_from_test_data'])} predicted id(s) are not in the test data (no image): "
                      f"{', '.join(info['missing_from_test_data'][:10])}")
    if info["unreadable_images"]:
        issues.append(f"{len(info['unreadable_images'])} sample(s) whose image could not be read or was refused "
                      "(reason on the card)")
    if info["boxes_not_parsed"]:
        issues.append(f"{len(info['boxes_not_parsed'])} grounding answer(s) or reference box set(s) not drawn (no "
                      "model family in run_info.json, or no valid image/input size)")
    shown = (f"{len(samples)} of {info['n_answered']} answered samples"
             + (f" (a seeded random subset: max {info['max_samples']}, seed {info['seed']})"
                if len(samples) < info["n_answered"] else ""))
    def figs(kind: str, captions: bool = True) -> str:
        return "".join(f'<figure><img src="{_png_uri(p.png)}" alt="{_e(p.caption)}">'
                       + (f"<figcaption>{_e(p.caption)}</figcaption>" if captions else "") + "</figure>"
                       for p in plots if p.kind == kind)

    if runs:
        curves = figs("curves")
        curves += "".join(f"<p>{_e(r.label)}: no scalars in {_e(r.tensorboard_dir)}</p>" for r in runs if not r.scalars)
    else:
        curves = ("<p>No training runs found: none of the evaluated adapters/checkpoints holds a run_summary.json. "
                  "Pass the training output folder(s) with <code>--runs</code>.</p>")
    headline, bars = figs("headline", captions=False), figs("bars")
    images_json = json.dumps(images).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{CSS}</style></head>
<body>
<header><h1>{_e(title)}</h1>
<p>models (the first is the base of the paired tests; min-max pixels each image was resized within):
{_e(", ".join(f"{m} ({budget[m]})" for m in models))} · generated {_e(time.strftime("%Y-%m-%d %H:%M"))}</p>
<nav><a href="#summary">summary</a><a href="#curves">training curves</a><a href="#gallery">gallery</a>
<a href="#tables">tables</a><a href="#plots">plots</a><a href="#notes">notes</a></nav>
{f'<p class="warn" id="budget-warning">{_e(budget_warning)}</p>' if budget_warning else ""}</header>
<section id="summary"><h2>Summary</h2><div class="figs">{headline}</div></section>
<section id="curves"><h2>Training curves</h2><div class="figs">{curves}</div></section>
<section id="gallery"><h2>Gallery</h2>
<p>{_e(shown)}. Right / wrong: {_e(RULES)}.</p>
{"".join(f'<p class="issues">{_e(i)}</p>' for i in issues)}
<div class="filters"><label>category <select id="f-cat">{_options(cat_opts)}</select></label>
<label>dataset <select id="f-ds">{_options(ds_opts)}</select></label>
<label>correctness <select id="f-ok">{_options(ok_opts)}</select></label>
<span id="shown"></span><span class="legend">{legend}</span></div>
<div class="grid">{"".join(_card(s) for s in samples)}</div></section>
<section id="tables"><h2>Tables</h2><p>Same cells as model_comparison_tables.md: best per row in bold, 95% CIs in
brackets, the paired test against the base in the last row.</p><div class="tbls">{_tables_html(sections)}</div></section>
<section id="plots"><h2>Metrics per category</h2><div class="figs">{bars}</div></section>
<section id="notes"><h2>Notes</h2><ul class="notes">{"".join(f"<li>{_e(n)}</li>" for n in notes)}</ul></section>
<script type="application/json" id="images">{images_json}</script>
<script>{JS}</script>
</body></html>
"""


def write_report(results: Mapping[str, dict], comparisons: dict | None, out_path: str | os.PathLike, *,
                 test_data: str | os.PathLike, runs=None, image_root: str | None = None,
                 allow_outside_root: bool = False, max_samples: int | None = 1000,
                 seed: int = 0, thumb_side: int = 224, metrics_json: Path | None = None, progress: bool = True,
                 plots: list | None = None) -> Path:
    """Render and atomically write the report; returns its path.

    runs: eval.curves.TrainingRun list; None finds them through the models' run_info.json (eval.curves).
    plots: eval.plots.render_plots(results, runs) when the caller has them already (rendered here otherwise)."""
    from eval.plots import render_plots

    from eval.curves import runs_from_results
    from eval.evaluate import compare_models

    if comparisons is None:
        comparisons = compare_models(results) if len(results) > 1 else {}
    if runs is None:
        runs = runs_from_results(results)
    records = read_records(test_data)
    samples, images, info = gallery_samples(results, records, metrics_json=metrics_json, image_root=image_root,
                                            allow_outside_root=allow_outside_root,
                                            max_samples=max_samples, seed=seed, thumb_side=thumb_side,
                                            progress=progress)
    if plots is None:
        plots = render_plots(results, runs)
    page = render_html(results, comparisons, samples, images, info, plots, runs)
    out_path = Path(out_path)
    atomic_write_text(out_path, page)
    for key, what in (("missing_from_test_data", "predicted ids not in the test data"),
                      ("unreadable_images", "unreadable images"), ("boxes_not_parsed", "grounding answers not drawn")):
        if info[key]:
            print(f"report: {len(info[key])} {what} (marked in the report)", file=sys.stderr)
    return out_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.report", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--metrics", required=True, type=Path, help="evaluation_metrics.json written by result_statistic.py")
    p.add_argument("--test_data", required=True, type=Path, help="the test.json the predictions were made from")
    p.add_argument("--out", type=Path, default=None, help="default: report.html next to --metrics")
    p.add_argument("--runs", nargs="+", default=None, metavar="DIR",
                   help="training output folders (run_summary.json / TensorBoard events); default: the evaluated "
                        "adapters' folders")
    p.add_argument("--image_root", default=None, help="folder that relative image paths in --test_data start from")
    p.add_argument("--allow_outside_root", action="store_true",
                   help="embed images whose relative path resolves outside --image_root (refused by default, as in "
                        "validation: the page is meant to be sent)")
    p.add_argument("--max_samples", type=int, default=1000, help="gallery size; above it a seeded random subset")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from eval.curves import find_runs

    try:
        data = read_json(a.metrics)
        if not isinstance(data, dict) or "results" not in data:
            raise DataError(f"{a.metrics}: not an evaluation_metrics.json (no 'results')")
        runs = find_runs(a.runs) if a.runs else None
        out = write_report(data["results"], data.get("comparisons") or {}, a.out or a.metrics.parent / "report.html",
                           test_data=a.test_data, runs=runs, image_root=a.image_root,
                           allow_outside_root=a.allow_outside_root, max_samples=a.max_samples,
                           seed=a.seed, metrics_json=a.metrics)
    except ValueError as e:  # DataError: bad input, named
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"html: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
