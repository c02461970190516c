"""The evaluation pipeline's orchestration (eval/run.py, what scripts/run_eval.sh launches): which commands run."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval.run import commands

ROOT = Path(__file__).resolve().parents[1]
ENV = {"MODELS": "base=/m/base other=/m/other", "TEST_DATA": "eval/test.json", "TYPE_MAPPING": "eval/tm.json"}


def _flag(cmd, name):
    return cmd[cmd.index(name) + 1]


def test_specs_reach_both_steps_unchanged_and_names_the_tables(tmp_path):
    (tmp_path / "s2").mkdir()
    (tmp_path / "s2" / "adapter_config.json").write_text("{}")
    env = dict(ENV, MODELS=f'base="/models/my base" stage2="/models/my base+{tmp_path}/s2"')
    gen, ppl, stats = commands(env, py="python3")
    assert gen[:3] == ["python3", "-m", "eval.generate"] and ppl[:3] == ["python3", "-m", "eval.perplexity"]
    for cmd in (gen, ppl):  # a quoted path with a space stays one spec
        assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--model"] == \
            ["base=/models/my base", f"stage2=/models/my base+{tmp_path}/s2"]
    assert stats[1].endswith("result_statistic.py") and stats[stats.index("--models") + 1:][:2] == ["base", "stage2"]
    assert _flag(gen, "--out_dir") == _flag(ppl, "--out_dir") == _flag(stats, "--pred_dir") == "result/predictions"


def test_limit_and_budget_reach_generation_and_perplexity_alike():
    gen, ppl, stats = commands(dict(ENV, LIMIT="20", MAX_PIXELS="200704", RESULT_DIR="out"), py="python3")
    for cmd in (gen, ppl):
        assert _flag(cmd, "--limit") == "20" and _flag(cmd, "--max_pixels") == "200704"
        assert _flag(cmd, "--out_dir") == "out/predictions"
    assert "--allow_partial" in stats  # a limited run is partial on purpose; the tables say which ids are left out


def test_a_bad_spec_or_missing_variable_is_one_line_before_anything_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MODELS="no-equals-sign", TEST_DATA="t.json", TYPE_MAPPING="m.json")
    r = subprocess.run([sys.executable, "-m", "eval.run"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "name=CHECKPOINT" in r.stderr and "Traceback" not in r.stderr, r.stderr
    env.pop("TEST_DATA")
    env["MODELS"] = "a=/m"
    r = subprocess.run(["bash", str(ROOT / "scripts/run_eval.sh")], cwd=tmp_path, env=env, capture_output=True,
                       text=True)
    assert r.returncode != 0 and r.stderr.strip() == "error: set TEST_DATA (test.json from data_process.data_trans)"


def test_preset_sets_the_generation_convention_unless_max_new_tokens_is_given():
    gen = commands(dict(ENV, PRESET="lmms_eval"), py="python3")[0]
    assert _flag(gen, "--preset") == "lmms_eval" and "--max_new_tokens" not in gen  # the preset's own 32
    gen = commands(dict(ENV, PRESET="lmms_eval", MAX_NEW_TOKENS="8"), py="python3")[0]
    assert _flag(gen, "--max_new_tokens") == "8"
