"""scripts/make_wheelhouse.sh + the offline install of scripts/setup.sh, on a small subset of the requirements.

The subset exercises each path of the script: a binary wheel picked for the target platform tags (pyyaml), a
requirement that has no wheel and is built from its sdist (rouge-score), and transitive dependencies (nltk, numpy,
absl-py, ...). The install goes into a fresh venv with --no-index and pip's configuration switched off, so nothing
but the wheelhouse can satisfy it. The full wheelhouse (torch, DeepSpeed from its sdist, everything) was built and
installed by hand; README "Air-gapped clusters" has its size and time.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def offline_pip_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}  # no configured find-links / indexes
    env["PIP_CONFIG_FILE"] = os.devnull  # and no pip.conf
    return env


def test_wheelhouse_subset_installs_with_no_index(tmp_path):
    wh = tmp_path / "wheelhouse"
    r = subprocess.run(["bash", "scripts/make_wheelhouse.sh", str(wh), "--only", "rouge-score pyyaml"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    wheels = sorted(p.name.lower() for p in wh.glob("*.whl"))
    assert any(w.startswith("rouge_score-") and w.endswith("-py3-none-any.whl") for w in wheels)  # built from sdist
    assert any(w.startswith("pyyaml-") and "manylinux" in w for w in wheels)
    assert any(w.startswith("nltk-") for w in wheels) and any(w.startswith("numpy-") for w in wheels)
    assert not any(w.startswith("torch-") for w in wheels)  # this subset does not need torch
    assert (wh / "requirements.txt").read_text().split() == ["rouge-score>=0.1.2", "pyyaml"]
    assert len((wh / "MANIFEST.txt").read_text().splitlines()) == len(wheels)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    vpy = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(vpy), "install", "-q", "--no-index", "--find-links", str(wh)]
    r = subprocess.run(pip + ["-r", str(wh / "requirements.txt")], env=offline_pip_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([str(vpy), "-c", "import yaml; from rouge_score import rouge_scorer as rs; "
                        "print(yaml.safe_load('a: 1')['a'], rs.RougeScorer(['rougeL']).score('a b c', 'a b d')"
                        "['rougeL'].fmeasure)"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == ["1", "0.6666666666666666"], r.stderr
    # a package that is not in the wheelhouse cannot come from anywhere else
    r = subprocess.run(pip + ["peft"], env=offline_pip_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "peft" in r.stderr


def test_setup_offline_needs_a_folder(tmp_path):
    r = subprocess.run(["bash", "scripts/setup.sh", "--offline", str(tmp_path / "nope")], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--offline needs a wheelhouse folder" in r.stderr
