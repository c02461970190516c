"""The HTML report (eval/report.py), its plots and curves, rendered in headless Chromium.

Inputs: the hand-built predictions of tests/test_evaluate.py (two families with different box formats describing the
same pixels), a test.json with real images (one of them missing on disk), and a training run written with the same
TensorBoard writer the HF Trainer uses. The metrics run without a JVM (--allow_missing_metrics with java hidden), so
the whole module takes seconds; the JVM path of result_statistic.py is covered by tests/test_result_statistic.py.
"""
from __future__ import annotations

import json
import html
import re
import shutil
from pathlib import Path

import pytest

import result_statistic
from medvl.jsonio import DataError
from eval.curves import find_runs, read_scalars
from eval.gallery import per_sample_scores, verdict
from tests.conftest import write_image
from tests.test_evaluate import IMAGE, REF_BOXES, VQA, write_fixture

MISSING_IMAGE_ID = "o3"


def write_run(run_dir: Path, stage: int, points: dict[str, list[tuple[int, float]]], relative_to: Path | None = None):
    """A stage output dir like train/finetune.py writes: run_summary.json naming its TensorBoard dir."""
    from torch.utils.tensorboard import SummaryWriter

    tb = run_dir / "tensorboard"
    w = SummaryWriter(str(tb))
    for tag, series in points.items():
        for step, value in series:
            w.add_scalar(tag, value, step)
    w.close()
    named = str(tb.relative_to(relative_to)) if relative_to else str(tb)
    (run_dir / "run_summary.json").write_text(json.dumps({"stage": stage, "tensorboard_dir": named}))
    return tb


STAGE2_POINTS = {"train/loss": [(10, 2.0), (20, 1.0), (30, 0.5)], "train/learning_rate": [(10, 1e-3), (20, 5e-4), (30, 1e-4)],
                 "eval/loss": [(20, 1.2), (30, 0.7)], "eval/closed_accuracy": [(20, 0.5), (30, 0.75)],
                 "train/train_runtime": [(30, 12.0)]}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    pred_dir, mapping = write_fixture(root)
    records = []
    for k, rid in enumerate([*VQA, *REF_BOXES]):
        img = root / "img" / f"{rid}.png"
        img.parent.mkdir(exist_ok=True)
        if rid != MISSING_IMAGE_ID:
            write_image(img, size=tuple(IMAGE), seed=k)
        meta = {"dataset": "vqa_rad", "boxes": [{"label": "lesion", "xyxy": REF_BOXES[rid], "image_size": IMAGE}]
                if rid in REF_BOXES else []}
        records.append({"id": rid, "image": str(img), "conversations": [
            {"from": "human", "value": "<image>\nq?"}, {"from": "gpt", "value": "a"}], "meta": meta})
    test_json = root / "test.json"
    test_json.write_text(json.dumps(records))
    runs = root / "runs"
    write_run(runs / "stage1", 1, {"train/loss": [(5, 3.0), (10, 2.5)]})
    write_run(runs / "stage2", 2, STAGE2_POINTS)
    out = root / "result"
    mp = pytest.MonkeyPatch()
    real_which = shutil.which
    mp.setattr(shutil, "which", lambda name, *a, **k: None if name == "java" else real_which(name, *a, **k))
    try:
        rc = result_statistic.main(["--pred_dir", str(pred_dir), "--type_mapping", str(mapping), "--out_dir", str(out),
                                    "--n_boot", "50", "--allow_missing_metrics", "--html", "--test_data",
                                    str(test_json), "--runs", str(runs)])
    finally:
        mp.undo()
    assert rc == 0
    results = json.loads((out / "evaluation_metrics.json").read_text())["results"]  # what the report was made from
    return {"root": root, "out": out, "html": (out / "report.html").read_text(), "results": results,
            "test_json": test_json, "pred_dir": pred_dir, "mapping": mapping, "runs": runs}


def _oks(card: str) -> dict:
    """{model: 1 | 0 | None} of a card's data-ok attribute (JSON, HTML-escaped)."""
    return json.loads(html.unescape(re.search(r'data-ok="([^"]*)"', card).group(1)))


def _cards(page: str) -> dict[str, str]:
    """{sample id: card html}."""
    cards = re.findall(r'<div class="card".*?<div class="id">(.*?) · .*?</div></div>', page, flags=re.S)
    bodies = re.split(r'(?=<div class="card")', page)[1:]
    return dict(zip(cards, bodies))


def test_self_contained(report):
    page = report["html"]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    assert all(v.startswith("data:") for v in re.findall(r'<img[^>]* src="([^"]*)"', page))
    assert "default-src 'none'" in page  # the CSP: anything external would be blocked and logged


def test_gallery_cards_verdicts_and_boxes(report):
    cards = _cards(report["html"])
    assert set(cards) == {*VQA, *REF_BOXES}
    # right/wrong marks follow the per-sample scores the tables averaged
    for model, res in report["results"].items():
        scores = per_sample_scores(res)
        for rid in cards:
            ok, _ = verdict(scores.get(rid))
            assert _oks(cards[rid])[model] == int(ok), (model, rid)
    assert _oks(cards["m1"]) == {"base": 0, "stage2": 1}  # base said MRI to a CT, stage2 CT
    # boxes: both families' texts land on the same original pixels as the reference
    def rects(card, cls):
        return [tuple(float(v) for v in m) for m in re.findall(
            rf'<rect class="{cls}"[^>]*x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', card)]
    assert rects(cards["b1"], "ref") == [(20.0, 10.0, 40.0, 40.0)]
    assert rects(cards["b1"], "pred") == [(20.0, 10.0, 40.0, 40.0)] * 2
    assert rects(cards["b2"], "pred") == [(150.0, 0.0, 50.0, 100.0), (100.0, 0.0, 100.0, 100.0)]  # base IoU 0.5
    assert len(rects(cards["b3"], "pred")) == 1 and "no parsable box" in cards["b3"]  # base gave no box
    assert 'viewBox="0 0 200 100"' in cards["b1"]
    # a missing image is shown and counted, not dropped
    assert "image not readable" in cards[MISSING_IMAGE_ID] and "missing_image" in cards[MISSING_IMAGE_ID]
    assert "1 sample(s) whose image could not be read" in report["html"]


def test_tables_curves_and_plots(report):
    page, out = report["html"], report["out"]
    for cat in ("overall", "closed/yes_no", "grounding", "native/question_type/POS"):
        assert f"<h3>{cat} <small>" in page
    assert "0.889 [" in page  # stage2 closed accuracy with its CI, as in the md table
    assert page.count('<figcaption>stage ') == 2
    plots = {p.name for p in (out / "plots").glob("*.png")}
    assert {"headline.png", "curves_stage1.png", "curves_stage2.png", "main.png", "grounding.png"} <= plots


def test_curves_read_back(report, tmp_path):
    runs = {r.label: r for r in find_runs([report["runs"]])}
    assert set(runs) == {"stage 1", "stage 2"}
    got = runs["stage 2"].scalars
    for tag, series in STAGE2_POINTS.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in series]
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in series], rel=1e-6)
    from eval.plots import curve_panels

    panels = curve_panels(got)
    assert panels == {"loss": ["eval/loss", "train/loss"], "eval metrics": ["eval/closed_accuracy"],
                      "learning rate": ["train/learning_rate"]}  # bookkeeping (train_runtime) left out
    # run_summary.json with a path relative to where training ran, found from elsewhere; a resumed run's repeated
    # step keeps the later value
    tb = write_run(tmp_path / "exp" / "stage2", 2, {"train/loss": [(1, 5.0), (2, 4.0)]}, relative_to=tmp_path)
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tb))
    w.add_scalar("train/loss", 3.0, 2)
    w.close()
    (run,) = find_runs([tmp_path / "exp"])
    assert run.tensorboard_dir == tb and read_scalars(tb)["train/loss"] == [(1, 5.0), (2, 3.0)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no TensorBoard event files"):
        find_runs([tmp_path / "empty"])
    with pytest.raises(DataError, match="not found"):
        find_runs([tmp_path / "nope"])
    # a run folder WITH a run_summary.json but no events (trained with --report_to none): the message says so,
    # not "no run_summary.json naming them"
    (tmp_path / "quiet").mkdir()
    (tmp_path / "quiet" / "run_summary.json").write_text('{"stage": 2, "tensorboard_dir": "quiet/tensorboard"}')
    with pytest.raises(DataError, match="its run_summary.json names quiet/tensorboard") as e:
        find_runs([tmp_path / "quiet"])
    assert "no run_summary.json" not in str(e.value) and "--report_to none" in str(e.value)


def test_rerender_from_metrics_json(report, tmp_path, capsys):
    from eval.report import main

    out = tmp_path / "again.html"
    assert main(["--metrics", str(report["out"] / "evaluation_metrics.json"), "--test_data", str(report["test_json"]),
                 "--out", str(out), "--max_samples", "5"]) == 0
    page = out.read_text()
    assert len(_cards(page)) == 5 and "5 of 15 answered samples (a seeded random subset: max 5, seed 0)" in page
    assert "<figcaption>stage" not in page and "No training runs found" in page  # adapters "[]": nothing to find
    # a test file that is not the one the predictions came from
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"id": "zzz", "image": "x.png", "conversations": []}]))
    assert main(["--metrics", str(report["out"] / "evaluation_metrics.json"), "--test_data", str(other)]) == 2
    assert "none of the 15 predicted ids" in capsys.readouterr().err


def test_html_needs_test_data(report, capsys):
    with pytest.raises(SystemExit) as e:
        result_statistic.main(["--pred_dir", str(report["pred_dir"]), "--type_mapping", str(report["mapping"]),
                               "--out_dir", str(report["root"] / "x"), "--html"])
    assert e.value.code == 2 and "--html needs --test_data" in capsys.readouterr().err


def test_renders_in_chromium_with_working_filters(report):
    """The browser shows it (not blank, every image decoded), no console error, and each filter shows what the
    per-sample scores say it should."""
    from eval.report_check import ink_fraction, render

    res = report["results"]
    right = {m: {i for i, s in per_sample_scores(r).items() if verdict(s)[0]} for m, r in res.items()}
    ids = {*VQA, *REF_BOXES}
    checks = {
        'medvlFilter("", "", "")': len(ids),
        'medvlFilter("closed", "", "")': res["base"]["categories"]["closed"]["n"],
        'medvlFilter("grounding", "", "")': len(REF_BOXES),
        'medvlFilter("", "vqa_rad", "right:stage2")': len(right["stage2"]),
        'medvlFilter("", "", "wrong:base")': len(ids - right["base"]),
        'medvlFilter("", "", "disagree")': len(right["base"] ^ right["stage2"]),
        'medvlFilter("", "", "all-right")': len(right["base"] & right["stage2"]),
        'medvlFilter("closed/yes_no", "", "wrong:stage2")':
            len(set(res["stage2"]["categories"]["closed/yes_no"]["ids"]) - right["stage2"]),
    }
    exprs = list(checks) + [
        'medvlFilter("", "", "")',
        "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length",
        "document.querySelectorAll('.card img').length",
    ]
    html_path = report["out"] / "report.html"
    got = render(html_path, max_height=2500, evaluate=exprs)
    assert got.console_errors == []
    assert got.values[:len(checks)] == list(checks.values())
    assert got.values[-2] == 0 and got.values[-1] == len(ids) - 1  # every image decoded; the missing one has none
    assert ink_fraction(got.png) > 0.05
    (report["root"] / "report.png").write_bytes(got.png)


def test_browser_check_catches_errors(tmp_path, capsys):
    """The check itself can fail: a script error, console.error, a CSP-blocked external load, a blank page."""
    from eval.report_check import main

    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><html><head><meta http-equiv=\"Content-Security-Policy\" content=\"default-src "
                   "'none'; img-src data:; script-src 'unsafe-inline'\"></head><body><h1>page</h1>"
                   "<img src=\"https://example.invalid/x.png\"><script>console.error('boom'); nope();</script>"
                   "</body></html>")
    assert main([str(bad), "--out", str(tmp_path / "bad.png"), "--height", "400"]) == 1
    err = capsys.readouterr().err
    assert "ReferenceError: nope is not defined" in err and "console.error: boom" in err
    assert "Content Security Policy" in err
    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><html><body></body></html>")
    assert main([str(blank), "--out", str(tmp_path / "blank.png"), "--height", "400"]) == 1
    assert "0.0% non-background pixels" in capsys.readouterr().out


def test_browser_check_captures_the_whole_page_by_default(tmp_path, capsys):
    """A report is ~15,000 px tall; the default screenshot took the top 3,000 of it without saying so."""
    from PIL import Image

    from eval.report_check import main

    tall = tmp_path / "tall.html"
    rows = "".join(f"<div style='height:50px;background:{'#36c' if i % 2 else '#fff'}'></div>" for i in range(100))
    tall.write_text(f"<!doctype html><html><body style='margin:0'>{rows}</body></html>")  # 5000 px, half ink
    assert main([str(tall), "--out", str(tmp_path / "tall.png")]) == 0
    assert "(the whole page," in capsys.readouterr().out
    assert Image.open(tmp_path / "tall.png").size[1] >= 5000
    assert main([str(tall), "--out", str(tmp_path / "top.png"), "--height", "1000"]) == 0
    assert "the top 1000 of 5000 px (--height)" in capsys.readouterr().out


def test_zero_image_size_draws_no_box_and_says_so(tmp_path):
    """image_size [0, 0] (in a prediction row, its input size, or a reference box) scales nothing: the card is
    made without boxes and the count is in info, instead of a ZeroDivisionError that stops the whole report."""
    from eval.gallery import gallery_samples
    from eval.report_html import _card

    pred = tmp_path / "m" / "predictions.jsonl"
    pred.parent.mkdir()
    box = "<|box_start|>(100,100),(300,500)<|box_end|>"
    rows = [{"id": "z1", "prediction": box, "reference": "lesion", "task": "grounding", "image_size": [0, 0],
             "input_size": [0, 0], "ref_boxes": [{"label": "lesion", "xyxy": [1, 1, 5, 5], "image_size": [0, 0]}]},
            {"id": "z2", "prediction": box, "reference": "lesion", "task": "grounding", "image_size": [200, 100],
             "input_size": [0, 0], "ref_boxes": [{"label": "lesion", "xyxy": [1, 1, 5, 5], "image_size": [0, 0]}]}]
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {"m": {"pred_path": str(pred), "run_info": {"family": "qwen2_vl"}, "categories": {}}}
    samples, images, info = gallery_samples(results, [], progress=False)
    assert [s["id"] for s in samples] == ["z1", "z2"] and images == []
    assert all(s["ref_boxes"] == [] and s["answers"][0]["boxes"] == [] for s in samples)
    assert samples[0]["size"] is None and samples[1]["size"] == (200, 100)
    assert sorted(info["boxes_not_parsed"]) == ["m:z1", "m:z2", "reference:z2"]
    assert all("<rect" not in _card(s) for s in samples)


def test_pixel_budget_beside_each_model_and_a_difference_flagged(report):
    """#16.7: the report names each model's pixel budget (from run_info.json via the results) in the header and the
    gallery legend, and leads with a warning when the models' budgets differ; no warning when they agree."""
    import copy

    from eval.gallery import gallery_samples
    from eval.report_html import render_html
    from medvl.jsonio import read_records

    records = read_records(report["test_json"])
    pages = {}
    for case, max_pixels in (("same", 1003520), ("different", 200704)):
        results = copy.deepcopy(report["results"])
        results["base"]["pixel_budget"] = {"min_pixels": 3136, "max_pixels": 1003520}
        results["stage2"]["pixel_budget"] = {"min_pixels": 3136, "max_pixels": max_pixels}
        samples, images, info = gallery_samples(results, records, progress=False)
        pages[case] = render_html(results, {}, samples, images, info, [], [])
    header = re.search(r"<header>.*?</header>", pages["different"], flags=re.S).group(0)
    assert "base (3136-1003520 px)" in header and "stage2 (3136-200704 px)" in header
    assert 'id="budget-warning"' in header and "different pixel budgets" in header
    legend = re.search(r'<span class="legend">(.*?)</div>', pages["different"], flags=re.S).group(1)
    assert "stage2 <small>(3136-200704 px)</small>" in legend
    assert 'id="budget-warning"' not in pages["same"] and "stage2 (3136-1003520 px)" in pages["same"]


def test_filters_work_with_spaces_and_symbols_in_model_names(report, tmp_path):
    """Model names are free text ("stage 2 = tuned"): the correctness filter still finds each model's verdicts."""
    from eval.gallery import gallery_samples
    from eval.report_check import render
    from eval.report_html import render_html
    from medvl.jsonio import read_records

    names = {"base": "base model", "stage2": "stage 2 = tuned:v1"}
    results = {names[m]: r for m, r in report["results"].items()}
    samples, images, info = gallery_samples(results, read_records(report["test_json"]), progress=False)
    page = tmp_path / "spaces.html"
    page.write_text(render_html(results, {}, samples, images, info, [], []))
    right = {names[m]: {i for i, s in per_sample_scores(r).items() if verdict(s)[0]}
             for m, r in report["results"].items()}
    ids = {*VQA, *REF_BOXES}
    checks = {'medvlFilter("", "", "right:stage 2 = tuned:v1")': len(right["stage 2 = tuned:v1"]),
              'medvlFilter("", "", "wrong:base model")': len(ids - right["base model"]),
              'medvlFilter("", "", "disagree")': len(right["base model"] ^ right["stage 2 = tuned:v1"]),
              'medvlFilter("closed/yes_no", "", "")': report["results"]["base"]["categories"]["closed/yes_no"]["n"]}
    assert len(set(checks.values())) > 1  # the counts differ, so a filter that ignores its input fails
    got = render(page, max_height=800, evaluate=list(checks))
    assert got.console_errors == []
    assert got.values == list(checks.values())


def test_results_written_with_word_f1_render_as_token_f1(report, tmp_path, capsys):
    """An evaluation_metrics.json from before the rename (metric key word_f1) gives the same tables and verdicts."""
    import copy

    from eval.report import main
    from eval.tables import build_sections

    data = json.loads((report["out"] / "evaluation_metrics.json").read_text())
    old = copy.deepcopy(data)
    for res in old["results"].values():
        for cat in res["categories"].values():
            cat["metrics"] = {("word_f1" if k == "token_f1" else k): v for k, v in cat["metrics"].items()}
    for cats in (old.get("comparisons") or {}).get("by_model", {}).values():
        for t in cats.values():
            if t.get("metric") == "token_f1":
                t["metric"] = "word_f1"
    assert any("word_f1" in c["metrics"] for r in old["results"].values() for c in r["categories"].values())
    assert build_sections(old["results"], old["comparisons"]) == build_sections(data["results"], data["comparisons"])
    assert [per_sample_scores(r) for r in old["results"].values()] == \
        [per_sample_scores(r) for r in data["results"].values()]
    path = tmp_path / "old" / "evaluation_metrics.json"
    path.parent.mkdir()
    path.write_text(json.dumps(old))
    assert main(["--metrics", str(path), "--test_data", str(report["test_json"]), "--runs", str(report["runs"]),
                 "--out", str(tmp_path / "old.html")]) == 0
    assert "token F1" in (tmp_path / "old.html").read_text()


def test_protocols_and_baselines_in_report(report, capsys):
    """The report shows a table per protocol, its baselines beside it, and every cited number with its protocol; a
    re-render from the files (python -m eval.report) reads protocols_detail.json and shows the same."""
    page = report["html"]
    assert '<section id="protocols">' in page
    for name in ("strict", "llava_med", "medevalkit", "lmms_eval"):
        assert f"<h3>protocol {name} <small>" in page
    assert "<h3>published baselines, protocol medevalkit <small>" in page
    assert "<h3>published baselines, every protocol <small>" in page and "Lingshu-7B" in page
    from eval.report import main as report_main

    out = report["root"] / "again.html"
    assert report_main(["--metrics", str(report["out"] / "evaluation_metrics.json"), "--test_data",
                        str(report["test_json"]), "--out", str(out)]) == 0
    assert "<h3>protocol lmms_eval <small>" in out.read_text()


def test_stage3_curves_get_reward_kl_and_length_panels():
    """TRL's GRPO tags (as the Trainer's TensorBoard callback names them) land on panels of one scale each: a reward
    mean never shares an axis with a KL of 1e-4 or a length of 64 tokens; stds and token counts stay off them."""
    from eval.plots import curve_panels
    tags = ["train/loss", "train/reward", "train/reward_std", "train/rewards/closed/mean", "train/rewards/closed/std",
            "train/rewards/iou/mean", "train/kl", "train/completions/mean_length", "train/completions/max_length",
            "train/completions/clipped_ratio", "train/entropy", "train/num_tokens", "train/learning_rate",
            "train/grad_norm", "eval/loss"]
    panels = curve_panels({t: [(1, 0.5)] for t in tags})
    assert panels["rewards"] == ["train/reward", "train/rewards/closed/mean", "train/rewards/iou/mean"]
    assert panels["KL"] == ["train/kl"]
    assert panels["completion length (tokens)"] == ["train/completions/max_length", "train/completions/mean_length"]
    assert panels["loss"] == ["eval/loss", "train/loss"]
    assert "train/num_tokens" not in sum(panels.values(), [])
    assert set(panels["other"]) == {"train/completions/clipped_ratio", "train/entropy", "train/reward_std",
                                    "train/rewards/closed/std"}
    # an SFT run gets no empty Stage-3 panels
    assert set(curve_panels({"train/loss": [(1, 1.0)], "eval/loss": [(1, 1.0)]})) == {"loss"}
