"""result_statistic.py end to end: the CLI once as a subprocess (real Java), the rest in-process without a JVM."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import result_statistic
from tests.test_evaluate import write_fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def fixture_dirs(tmp_path):
    pred_dir, mapping = write_fixture(tmp_path)
    return pred_dir, mapping, tmp_path / "result"


def test_cli_end_to_end(fixture_dirs):
    pred_dir, mapping, out = fixture_dirs
    proc = subprocess.run([sys.executable, "result_statistic.py", "--pred_dir", str(pred_dir), "--type_mapping",
                           str(mapping), "--out_dir", str(out), "--n_boot", "100"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name in ("model_comparison_tables.md", "model_comparison_tables.txt", "evaluation_metrics.json"):
        assert (out / name).is_file() and any(line.endswith(str(out / name)) for line in lines)
    plots = [Path(line.split(": ", 1)[1]) for line in lines if line.startswith("plot: ")]
    assert plots and all(p.is_file() and p.parent == out / "plots" for p in plots)
    table = [line for line in lines if line.startswith(("model ", "base ", "stage2 "))]
    assert [line.split()[0] for line in table] == ["model", "base", "stage2"]
    assert "0.889 [" in table[2]  # stage2 closed accuracy with its CI
    md = (out / "model_comparison_tables.md").read_text()
    for cat in ("overall", "closed", "closed/yes_no", "closed/modality", "closed/position", "closed/general", "open",
                "grounding"):
        assert f"\n## {cat} (n = " in md
    data = json.loads((out / "evaluation_metrics.json").read_text())
    assert data["models"] == ["base", "stage2"] and data["comparisons"]["base"] == "base"
    assert not [p for p in out.rglob(".*.tmp")]


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as e:
        result_statistic.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--pred_dir", "--type_mapping", "--out_dir", "--models", "--bertscore_model", "--bertscore_layers",
                 "--allow_missing_metrics", "--no_plots", "examples:"):
        assert flag in text


def test_discover_order(fixture_dirs):
    pred_dir, _, _ = fixture_dirs
    (pred_dir / "aaa").mkdir()
    (pred_dir / "aaa" / "predictions.jsonl").write_text((pred_dir / "base" / "predictions.jsonl").read_text())
    assert list(result_statistic.discover_models(pred_dir, None)) == ["base", "aaa", "stage2"]  # "base" first
    assert list(result_statistic.discover_models(pred_dir, ["stage2", "base"])) == ["stage2", "base"]
    from medvl.jsonio import DataError

    with pytest.raises(DataError, match="nope"):
        result_statistic.discover_models(pred_dir, ["nope"])


def test_missing_model_exit_code(fixture_dirs, capsys):
    pred_dir, mapping, out = fixture_dirs
    rc = result_statistic.main(["--pred_dir", str(pred_dir), "--type_mapping", str(mapping), "--out_dir", str(out),
                                "--models", "base", "ghost"])
    assert rc == 2 and "ghost" in capsys.readouterr().err


def test_missing_java_cli(fixture_dirs, monkeypatch, capsys):
    """No Java: the run stops with the reason; with --allow_missing_metrics the tables show the reason, not a number."""
    pred_dir, mapping, out = fixture_dirs
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "java" else real_which(name, *a, **k))
    args = ["--pred_dir", str(pred_dir), "--type_mapping", str(mapping), "--out_dir", str(out), "--n_boot", "50",
            "--no_plots"]
    assert result_statistic.main(args) == 3
    assert "--allow_missing_metrics" in capsys.readouterr().err
    assert not out.exists()
    assert result_statistic.main(args + ["--allow_missing_metrics"]) == 0
    md = (out / "model_comparison_tables.md").read_text()
    assert "| METEOR | unavailable (see notes) | unavailable (see notes) |" in md
    assert "| CIDEr | unavailable (see notes) | unavailable (see notes) |" in md
    assert "no `java` executable on PATH" in md
    txt = (out / "model_comparison_tables.txt").read_text()
    assert "unavailable (see notes)" in txt and "no `java` executable" in txt
    assert not (out / "plots").exists()
