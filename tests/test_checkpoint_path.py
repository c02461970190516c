"""A wrong --model / --model_name_or_path is refused in one line before transformers sees it (issue #19 item 2):
a missing folder, a mistyped relative path, a folder without config.json, a hub id with no cache and no network."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants

from medvl.checkpoint_path import CheckpointNotFound, resolve_checkpoint
from medvl.loading import load_model_and_processor, load_processor
import data_process.validate as validate
import eval.perplexity as perplexity

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """Offline, with an empty Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    (tmp_path / "hf_home").mkdir()
    return tmp_path / "hf_home"


def _refusal(text, *args):
    with pytest.raises(CheckpointNotFound) as e:
        resolve_checkpoint(text, *args)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_absolute_folder(tmp_path, no_hub):
    missing = tmp_path / "no_such_ckpt"
    assert _refusal(str(missing)) == f"no such folder: {missing} (resolved to {missing})"


def test_mistyped_relative_path_is_a_folder_not_a_hub_id(tmp_path, no_hub, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # models/ exists, models/qwen2vl does not: a typo, not a hub repo "models"
    assert _refusal("models/qwen2vl") == f"no such folder: models/qwen2vl (resolved to {tmp_path / 'models/qwen2vl'})"
    assert _refusal("./qwen2vl").startswith("no such folder: ./qwen2vl (resolved to ")
    assert _refusal("out/stage1/checkpoint-5").startswith("no such folder: out/stage1/checkpoint-5 ")  # 3 parts


def test_folder_without_config(tmp_path, no_hub):
    (tmp_path / "empty").mkdir()
    assert _refusal(str(tmp_path / "empty")) == f"{tmp_path / 'empty'} holds no config.json: not a checkpoint folder"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    assert "an adapter, which goes on top of its base" in _refusal(str(adapter))
    (tmp_path / "weights.bin").write_bytes(b"")
    assert _refusal(str(tmp_path / "weights.bin")) == f"{tmp_path / 'weights.bin'} is a file, not a checkpoint folder"
    # a processor whose family is known needs only the folder (an adapter dir with its tokenizer)
    assert resolve_checkpoint(str(adapter), None) == str(adapter)


def test_hub_id_offline_refused_at_once(no_hub):
    t0 = time.time()
    msg = _refusal("Qwen/Qwen2-VL-2B-Instruct")
    assert time.time() - t0 < 2  # no retries
    assert msg.startswith("no hub access: pass a local checkpoint folder (Qwen/Qwen2-VL-2B-Instruct is not in the "
                          "local Hugging Face cache and huggingface.co cannot be reached")


def test_hub_id_unreachable_without_offline_flag(no_hub, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    with socket.socket() as s:  # a port nothing listens on: the connection check fails at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    t0 = time.time()
    msg = _refusal("org/model")
    assert time.time() - t0 < 4
    assert msg.startswith("no hub access: pass a local checkpoint folder (org/model is not in the local Hugging Face "
                          "cache and 127.0.0.1 cannot be reached")


def test_cached_hub_id_and_local_folder_pass(no_hub, tiny_models, monkeypatch):
    snap = no_hub / "hub" / "models--org--model" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (no_hub / "hub" / "models--org--model" / "refs").mkdir()
    (no_hub / "hub" / "models--org--model" / "refs" / "main").write_text("abc123")
    assert resolve_checkpoint("org/model") == "org/model"  # offline, but in the cache: transformers reads it there
    ckpt = tiny_models["qwen2_vl"]
    assert resolve_checkpoint(str(ckpt)) == str(ckpt)
    monkeypatch.setenv("HOME", str(ckpt.parent))
    assert resolve_checkpoint(f"~/{ckpt.name}") == str(ckpt)


def test_core_loaders_refuse_first(tmp_path, no_hub):
    with pytest.raises(CheckpointNotFound, match="^no such folder: "):
        load_model_and_processor(str(tmp_path / "gone"))
    with pytest.raises(CheckpointNotFound, match="holds no config.json"):
        load_processor(str(tmp_path))


def _one_line_error(proc):
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def _run(args, tmp_path, no_hub):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(no_hub))
    return subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env=dict(env, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=300)


def test_generate_entry_point_one_line(tmp_path, no_hub):
    (tmp_path / "x.json").write_text("[]")
    line = _one_line_error(_run(["eval.generate", "--model", "m=/nonexistent", "--test_data", "x.json",
                                 "--output_dir", "out"], tmp_path, no_hub))
    assert line == "error: no such folder: /nonexistent (resolved to /nonexistent)"


def test_finetune_entry_point_one_line(tmp_path, no_hub):
    (tmp_path / "x.json").write_text("[]")
    line = _one_line_error(_run(["train.finetune", "--model_name_or_path", "nope/dir", "--train_data", "x.json",
                                 "--output_dir", "out"], tmp_path, no_hub))
    assert line.startswith("error: no hub access: pass a local checkpoint folder (nope/dir is not in the local "
                           "Hugging Face cache and huggingface.co cannot be reached")


def test_validate_and_perplexity_mains_exit_with_the_line(tmp_path, no_hub):
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(SystemExit) as e:
        validate.main(["--model_name_or_path", str(tmp_path), "--data", str(tmp_path / "x.json"),
                       "--out", str(tmp_path / "clean.json")])
    assert str(e.value.code) == f"error: {tmp_path} holds no config.json: not a checkpoint folder"
    with pytest.raises(SystemExit) as e:
        perplexity.main(["--model", f"m={tmp_path / 'gone'}", "--test_data", str(tmp_path / "x.json"),
                         "--output_dir", str(tmp_path / "out")])
    assert str(e.value.code).startswith(f"error: no such folder: {tmp_path / 'gone'}")
    with pytest.raises(SystemExit) as e:  # a malformed spec: one line too
        perplexity.main(["--model", "no_equals_sign", "--test_data", str(tmp_path / "x.json")])
    assert str(e.value.code).startswith("error: model spec 'no_equals_sign' must look like")
