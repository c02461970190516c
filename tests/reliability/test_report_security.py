"""The report in headless Chromium: text fields carry markup that must neither render nor run, and the CSP is a
second wall that stops a script which got past escaping.

Every text field of the page holds PAYLOAD (an inline <script> and an <img onerror> that would set the title): the
sample id, question, reference answer, prediction, dataset name, model name, reference and predicted box labels.
The page must keep its title and its own elements, show each payload as text, and log no error (an injected
<img src=x> would be a CSP-blocked load). Then raw markup is written into the finished file, as if escaping had
failed: the page's own script (hashed in the CSP) still runs, the injected script and handler do not.
"""
from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import write_image

PAYLOAD = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
TITLE = "Model comparison report"
MODEL = f"model{PAYLOAD}"
DATASET = f"ds{PAYLOAD}"
IDS = {"vqa": f"id-a{PAYLOAD}", "grounding": f"id-b{PAYLOAD}"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from eval.evaluate import evaluate_models
    from eval.report import write_report

    root = tmp_path_factory.mktemp("xss")
    img = root / "img.png"
    write_image(img, size=(200, 100))
    box = {"label": f"ref-label{PAYLOAD}", "xyxy": [20, 10, 60, 50], "image_size": [200, 100]}
    records, rows, mapping = [], [], {}
    for task, rid in IDS.items():
        meta = {"dataset": DATASET, **({"task": "grounding", "boxes": [box]} if task == "grounding" else {})}
        records.append({"id": rid, "image": str(img), "meta": meta, "conversations": [
            {"from": "human", "value": f"<image>\nquestion{PAYLOAD}"}, {"from": "gpt", "value": f"answer{PAYLOAD}"}]})
        pred = (f"<|object_ref_start|>pred-label{PAYLOAD}<|object_ref_end|><|box_start|>(100,100),(300,500)<|box_end|>"
                if task == "grounding" else f"prediction{PAYLOAD}")
        rows.append({"id": rid, "prediction": pred, "reference": f"answer{PAYLOAD}", "question": f"question{PAYLOAD}",
                     "answer_type": "open", "task": task, "dataset": DATASET, "image_size": [200, 100],
                     "input_size": [224, 112], "ref_boxes": [box] if task == "grounding" else []})
        mapping[rid] = {"answer_type": "open", "dataset": DATASET, "question_type": f"qtype{PAYLOAD}"}
    pred_dir = root / "pred" / "m"
    pred_dir.mkdir(parents=True)
    (pred_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (pred_dir / "run_info.json").write_text(json.dumps({"family": "qwen2_vl", "model": MODEL, "checkpoint": "ckpt",
                                                        "adapters": []}))
    (root / "test.json").write_text(json.dumps(records))
    (root / "type_mapping.json").write_text(json.dumps(mapping))
    mp = pytest.MonkeyPatch()
    real_which = shutil.which
    mp.setattr(shutil, "which", lambda name, *a, **k: None if name == "java" else real_which(name, *a, **k))
    try:  # no JVM: METEOR/SPICE marked unavailable, the rest computed
        results = evaluate_models({MODEL: pred_dir / "predictions.jsonl"}, root / "type_mapping.json",
                                  allow_missing=True, n_boot=20)
    finally:
        mp.undo()
    out = write_report(results, {}, root / "report.html", test_data=root / "test.json", runs=[], progress=False)
    return out


def _check(path, extra=()):
    from eval.report_check import render

    exprs = ["document.title",
             "document.querySelectorAll('script').length",
             "Array.from(document.images).filter(i => !i.src.startsWith('data:')).length",
             "document.body.innerText",
             "typeof window.medvlFilter",
             "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length", *extra]
    return render(path, max_height=1200, evaluate=exprs)


def test_injected_markup_shows_as_text_and_runs_nothing(report):
    got = _check(report, ["Array.from(document.querySelectorAll('svg title')).map(t => t.textContent).join('\\n')"])
    title, n_scripts, foreign_imgs, text, filt, undecoded, svg_titles = got.values
    assert title == TITLE and n_scripts == 2 and foreign_imgs == 0  # only the page's own script + image data
    assert filt == "function" and undecoded == 0  # the page's own script ran: images set, filters defined
    assert got.console_errors == []
    for field in (MODEL, DATASET, *IDS.values(), f"question{PAYLOAD}", f"answer{PAYLOAD}", f"prediction{PAYLOAD}"):
        assert field in text, field  # shown literally
    assert f"reference ref-label{PAYLOAD}" in svg_titles and f"pred-label{PAYLOAD}" in svg_titles


def test_csp_blocks_script_that_got_past_escaping(report, tmp_path):
    page = report.read_text()
    hacked = tmp_path / "hacked.html"
    hacked.write_text(page.replace("</body>", PAYLOAD + "<div id=sty style=\"color:rgb(255, 0, 0)\">x</div></body>"))
    got = _check(hacked, ["getComputedStyle(document.getElementById('sty')).color"])
    title, n_scripts, foreign_imgs, _, filt, _, colour = got.values
    assert n_scripts == 3 and foreign_imgs == 1  # the raw markup is in the DOM...
    assert title == TITLE  # ...but neither the inline script nor the onerror handler ran
    assert filt == "function"  # while the page's own (hashed) script did
    assert colour != "rgb(255, 0, 0)"  # an injected style attribute is not applied either
    assert any("Content Security Policy" in e for e in got.console_errors), got.console_errors


def test_csp_allows_exactly_the_pages_own_script_and_style(report):
    """No 'unsafe-inline': script-src and style-src are the sha256 of the page's one executable script and its one
    style block (an edit to either that forgot the hash would leave the page without filters or styling)."""
    import base64
    import hashlib
    import re

    page = report.read_text()
    csp = dict(d.strip().split(" ", 1) for d in re.search(
        r'http-equiv="Content-Security-Policy" content="([^"]*)"', page).group(1).split(";"))
    assert "unsafe" not in csp["script-src"] + csp["style-src"]

    def sha(text):
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)  # executable ones (the JSON block has a type)
    styles = re.findall(r"<style>(.*?)</style>", page, flags=re.S)
    assert len(scripts) == 1 and len(styles) == 1
    assert csp["script-src"] == sha(scripts[0]) and csp["style-src"] == sha(styles[0])
    assert csp["default-src"] == "'none'" and csp["img-src"] == "data:"
    assert " style=" not in page  # no style attributes: they would need 'unsafe-inline'
