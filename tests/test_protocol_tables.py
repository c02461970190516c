"""protocols.json / the protocol tables / the baselines through result_statistic.py on the small fixture."""
from __future__ import annotations

import json
import shutil

import pytest

import result_statistic
from medvl.jsonio import DataError
from eval.protocol_tables import baseline_section, load_baselines, protocol_sections
from tests.test_evaluate import write_fixture


@pytest.fixture()
def scored(tmp_path, monkeypatch):
    pred_dir, mapping = write_fixture(tmp_path)
    info = pred_dir / "stage2" / "run_info.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "preset": "medevalkit"}))
    real_which = shutil.which  # no JVM: METEOR/CIDEr/BLEU marked unavailable, the protocols need none
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "java" else real_which(name, *a, **k))
    out = tmp_path / "result"
    args = ["--pred_dir", str(pred_dir), "--type_mapping", str(mapping), "--out_dir", str(out), "--n_boot", "50",
            "--no_plots", "--allow_missing_metrics"]
    return args, out


def test_protocols_json_shape_and_tables(scored, capsys):
    args, out = scored
    assert result_statistic.main(args) == 0
    assert f"protocols: {out / 'protocols.json'}" in capsys.readouterr().out
    data = json.loads((out / "protocols.json").read_text())
    assert list(data) == ["strict", "llava_med", "medevalkit", "lmms_eval"]
    for proto, models in data.items():
        assert list(models) == ["base", "stage2"]
        for cats in models.values():
            assert {"overall", "closed", "open", "dataset/vqa_rad"} <= set(cats)
            assert all(0 <= v <= 1 for c in cats.values() for v in c.values())
    assert "accuracy" in data["medevalkit"]["stage2"]["overall"] and "recall" in data["llava_med"]["base"]["open"]
    detail = json.loads((out / "protocols_detail.json").read_text())
    assert detail["medevalkit"]["models"]["stage2"]["preset"] == "medevalkit"
    assert detail["strict"]["models"]["base"]["categories"]["closed"]["metrics"]["accuracy"]["ci"]["low"] is not None
    md = (out / "model_comparison_tables.md").read_text()
    for name in data:
        assert f"\n## protocol {name} (closed = " in md
    assert "predictions from preset(s): medevalkit, unrecorded" in md
    assert "Closed means here: a yes/no reference" in md
    # baselines of a protocol appear beside its table only: vqa_rad rows of llava_med and medevalkit, never lmms_eval
    assert "## published baselines, protocol llava_med" in md and "## published baselines, protocol medevalkit" in md
    assert "## published baselines, protocol lmms_eval" not in md
    section = md.split("## published baselines, protocol medevalkit")[1].split("\n## ")[0]
    assert "| MedGemma-4B-IT (zero-shot) | vqa_rad test, overall: accuracy" in section and "| 0.725 |" in section
    assert "slake" not in section.split("- Published")[0]  # only the dataset the user scored


def test_protocol_subset_and_unknown(scored, capsys):
    args, out = scored
    assert result_statistic.main(args + ["--protocols", "lmms_eval"]) == 0
    assert list(json.loads((out / "protocols.json").read_text())) == ["lmms_eval"]
    assert result_statistic.main(args + ["--protocols", "strict,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_baselines_file_and_matching(tmp_path):
    rows = load_baselines()
    assert {b["protocol"] for b in rows} == {"llava_med", "medevalkit"}
    assert all(b["source"] and 0 <= b["value"] <= 1 for b in rows)
    lingshu = {b["dataset"]: b["value"] for b in rows if b["model"] == "Lingshu-7B"}
    assert lingshu == {"vqa_rad": 0.679, "slake": 0.831, "pathvqa": 0.619}
    detail = {"models": {"m": {"preset": None, "categories": {
        "dataset/slake/open": {"n": 2, "metrics": {"recall": {"score": 0.5}}}}}}, "metric_labels": {"recall": "recall"}}
    sec = baseline_section("llava_med", detail, rows)
    assert sec and all(r[1][0].startswith("slake") for r in sec["rows"])
    assert any(r[1][2] == "0.500" for r in sec["rows"] if "open" in r[1][0])  # the user's number on the same row
    assert baseline_section("lmms_eval", detail, rows) is None
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"baselines": [{"model": "x", "protocol": "nope"}]}))
    with pytest.raises(DataError, match="baseline #0"):
        load_baselines(bad)
    assert protocol_sections(None) == []
