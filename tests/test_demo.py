"""The README's demo end to end: it must pass its learning bar and write the seed's categories."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_demo_learns_and_writes_tables(tmp_path):
    env = dict(os.environ, DEMO_DIR=str(tmp_path / "demo"))
    r = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "learning bar (stage 2 >= 0.80 and >= base + 0.30): PASSED" in r.stdout
    md = (tmp_path / "demo" / "result" / "model_comparison_tables.md").read_text()
    for cat in ["## closed/yes_no", "## closed/modality", "## closed/position", "## open", "## grounding"]:
        assert cat in md, cat
    assert list((tmp_path / "demo" / "run" / "stage2" / "tensorboard").glob("events.out.tfevents.*"))
    assert list((tmp_path / "demo" / "result" / "plots").glob("*.png"))
    plots = {p.name for p in (tmp_path / "demo" / "result" / "plots").glob("*.png")}
    assert {"headline.png", "curves_stage1.png", "curves_stage2.png"} <= plots  # curves from the TensorBoard events
    # issue 20: every protocol scored from the same predictions, and the report shows them with the baselines
    import json
    protocols = json.loads((tmp_path / "demo" / "result" / "protocols.json").read_text())
    assert set(protocols) == {"strict", "llava_med", "medevalkit", "lmms_eval"} and "stage2" in protocols["strict"]
    html = (tmp_path / "demo" / "result" / "report.html").read_text()
    assert "Scoring protocols and published baselines" in html and "MedGemma" in html
    # the HTML report, rendered as docs/demo_report.png is made: `python -m eval.report_check <report> --out PNG`
    from eval.report_check import ink_fraction, render

    report = tmp_path / "demo" / "result" / "report.html"
    got = render(report, max_height=3000, evaluate=[
        "document.querySelectorAll('.card').length", "document.querySelectorAll('rect.pred').length",
        "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length",
        "document.querySelectorAll('#curves img').length"])
    assert got.console_errors == []
    n_cards, n_pred_boxes, n_broken_images, n_curve_plots = got.values
    assert n_cards == 240 and n_pred_boxes > 0 and n_broken_images == 0 and n_curve_plots == 2
    assert ink_fraction(got.png) > 0.05
