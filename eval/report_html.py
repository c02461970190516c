"""The report page as HTML: header, summary plots, training curves, the gallery with its filters, the tables (the
same sections as model_comparison_tables.md, eval/tables.py) and the notes. Everything is escaped; the only style
and script are eval/report_assets.py's, allowed by hash in the page's Content-Security-Policy.
"""
from __future__ import annotations

import base64
import html
import json
import time
from typing import Mapping, Sequence

from medvl.paths import OUTSIDE_ROOT
from eval.calibration import NO_DATA, RERUN_NOTE, calibration_of
from eval.categorize import category_order
from eval.gallery import RULES
from eval.old_results import upgrade_results
from eval.pixel_budget import budget_text, pixel_budget_warning
from eval.report_assets import CSP, CSS, JS, MODEL_COLOURS, REFERENCE_COLOUR, SWATCH
from eval.protocol_tables import protocol_sections
from eval.tables import build_sections


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
    # JSON, not "name=1 name=0": a model name may hold spaces or "=" (the filter script parses it)
    oks = json.dumps({a["model"]: None if a["ok"] is None else int(a["ok"]) for a in sample["answers"]})
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
    return (f'<div class="card" data-cats="{_e(json.dumps(sample["categories"]))}" data-dataset="{_e(sample["dataset"])}" '
            f'data-ok="{_e(oks)}"><div class="pic">{pic}{_svg_boxes(sample)}</div>{more}'
            f'<div class="q"><b>Q</b> {_e(sample["question"])}</div>'
            f'<div class="ref"><b>Reference</b> {_e(sample["reference"])}</div>'
            f'<table class="ans">{"".join(answers)}</table>'
            f'<div class="id">{_e(sample["id"])} · {_e(sample["dataset"])} · {_e(sample["task"])}</div></div>')


def _options(values: Sequence[tuple[str, str]]) -> str:
    return "".join(f'<option value="{_e(v)}">{_e(label)}</option>' for v, label in values)


def render_html(results: Mapping[str, dict], comparisons: dict, samples: list[dict], images: list[str], info: dict,
                plots: list, runs, title: str = "Model comparison report", protocols: Mapping | None = None,
                warnings: Sequence[str] = ()) -> str:
    """The page. plots: eval.plots.Plot list (embedded as they are); runs: eval.curves.TrainingRun list;
    protocols: eval.protocol_tables.score_protocols(...) (a table per protocol, its baselines, every baseline);
    warnings: lines shown at the top (eval.leakage_notes.leakage_warnings: the test set overlaps training data)."""
    results = upgrade_results(results)  # an older results file says word_f1
    models = list(results)
    sections, notes = build_sections(results, comparisons)
    # the pixel budget beside every model name: images resized differently make answers incomparable
    budget = {m: f"{budget_text(results[m].get('pixel_budget'))} px" for m in models}
    budget_warning = pixel_budget_warning(results)
    legend = "".join(f'<span><span class="sw {SWATCH[MODEL_COLOURS[k % len(MODEL_COLOURS)]]}"></span>'
                     f'{_e(m)} <small>({_e(budget[m])})</small></span>' for k, m in enumerate(models))
    legend += f'<span><span class="sw {SWATCH[REFERENCE_COLOUR]}"></span>reference box (dashed)</span>'
    all_cats = []
    for s in samples:
        all_cats += [c for c in s["categories"] if c not in all_cats]
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
    if protocols:
        proto = (f"<p>The same predictions scored under each protocol's own rules; each table says what closed "
                 f"means there and which preset made the predictions. Published numbers appear only beside the same "
                 f"protocol and dataset; the last table lists every cited number with its protocol.</p>"
                 f'<div class="tbls">{_tables_html(protocol_sections(protocols, with_all_baselines=True))}</div>')
    else:
        proto = "<p>No protocols scored (result_statistic.py --protocols none).</p>"
    calib = figs("calibration")
    if not calib:
        reasons = dict.fromkeys(f"{m}: {calibration_of(results[m]).get('reason', NO_DATA)}" for m in models)
        calib = ('<p class="warn" id="no-calibration">' + "<br>".join(_e(r) for r in reasons) + "</p>"
                 + f"<p>{_e(RERUN_NOTE)}.</p>")
    warn_html = "".join(f'<p class="warn leakage">{_e(w)}</p>' for w in warnings)
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
<a href="#tables">tables</a><a href="#protocols">protocols</a><a href="#calibration">calibration</a><a href="#plots">plots</a>
<a href="#notes">notes</a></nav>
{warn_html}{f'<p class="warn" id="budget-warning">{_e(budget_warning)}</p>' if budget_warning else ""}</header>
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
<section id="protocols"><h2>Scoring protocols and published baselines</h2>{proto}</section>
<section id="calibration"><h2>Calibration of closed yes/no answers</h2>
<p>Confidence: the probability of the model's own yes/no answer at the first answer position, normalised over yes and
no; the tables give ECE, the risk-coverage area and the bins.</p><div class="figs">{calib}</div></section>
<section id="plots"><h2>Metrics per category</h2><div class="figs">{bars}</div></section>
<section id="notes"><h2>Notes</h2><ul class="notes">{"".join(f"<li>{_e(n)}</li>" for n in notes)}</ul></section>
<script type="application/json" id="images">{images_json}</script>
<script>{JS}</script>
</body></html>
"""
