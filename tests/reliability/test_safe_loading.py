"""Safe loading: no pickle loads of our own, no remote code unless asked, weights in safetensors, HTTP with timeouts
and retries that never show the API key."""
from __future__ import annotations

import ast
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", "__pycache__", "node_modules", ".venv", "venv", "wheelhouse", "build", "dist"}


def _python_files(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
        for f in filenames:
            if f.endswith(".py"):
                yield Path(dirpath) / f


def _calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(func) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _unsafe_torch_loads(path: Path) -> list[str]:
    """file:line of every torch.load call (also a bare `load` imported from torch) without weights_only=True."""
    bare_load = "from torch import load" in path.read_text(encoding="utf-8")
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    bad = []
    for call in _calls(path):
        name = _name(call.func)
        if name == "torch.load" or (bare_load and name == "load"):
            v = _kw(call, "weights_only")
            if not (isinstance(v, ast.Constant) and v.value is True):
                bad.append(f"{where}:{call.lineno}")
    return bad


def test_no_torch_load_without_weights_only_in_the_repo():
    bad = [b for f in _python_files(ROOT) for b in _unsafe_torch_loads(f)]
    assert not bad, f"torch.load without weights_only=True (unpickles arbitrary code): {bad}"


def test_the_trainer_we_resume_through_loads_its_state_with_weights_only():
    """optimizer.pt / scheduler.pt / rng_state.pth in our checkpoints are read back by transformers' Trainer: an
    upgrade that unpickles them would turn a checkpoint directory into code. (DeepSpeed's own ZeRO shards are
    loaded by DeepSpeed with weights_only=False: see docs/reliability.md.)"""
    import transformers.trainer

    path = Path(transformers.trainer.__file__)
    loads = [c for c in _calls(path) if _name(c.func) == "torch.load"]
    assert loads and not _unsafe_torch_loads(path)


def test_trust_remote_code_is_off_unless_asked():
    """Every default in our code says False, and no call passes True literally."""
    problems = []
    for f in _python_files(ROOT):
        if "tests" in f.relative_to(ROOT).parts:
            continue
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                v = _kw(node, "trust_remote_code")
                if isinstance(v, ast.Constant) and v.value is True:
                    problems.append(f"{f}:{node.lineno} passes trust_remote_code=True")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.args + node.args.kwonlyargs
                defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults + \
                    node.args.kw_defaults
                for a, d in zip(args, defaults):
                    if a.arg == "trust_remote_code" and not (isinstance(d, ast.Constant) and d.value is False):
                        problems.append(f"{f}:{node.lineno} {node.name}(trust_remote_code=...) default is not False")
            if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "trust_remote_code":
                if "default=False" not in ast.unparse(node.value) and ast.unparse(node.value) != "False":
                    problems.append(f"{f}:{node.lineno} field trust_remote_code does not default to False")
    assert not problems, problems
    from train.config import ModelArguments
    assert ModelArguments(model_name_or_path="x").trust_remote_code is False


@pytest.fixture(scope="module")
def remote_code_checkpoint(tiny_models, tmp_path_factory):
    """The tiny checkpoint plus an auto_map to a custom_code.py that, when imported, writes a marker file."""
    import shutil

    d = tmp_path_factory.mktemp("remote") / "ckpt"
    shutil.copytree(tiny_models["qwen2_vl"], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "custom_code.RemoteConfig",
                       "AutoModelForImageTextToText": "custom_code.RemoteModel"}
    (d / "config.json").write_text(json.dumps(cfg))
    marker = d.parent / "remote_code_ran"
    (d / "custom_code.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration\n"
        "class RemoteConfig(Qwen2VLConfig):\n    pass\n"
        "class RemoteModel(Qwen2VLForConditionalGeneration):\n    config_class = RemoteConfig\n")
    return d, marker


def test_loaders_never_run_a_checkpoints_code_by_default(remote_code_checkpoint, tmp_path):
    from eval.model_spec import ModelSpec, load_spec
    from medvl.loading import load_model_and_processor, load_processor

    ckpt, marker = remote_code_checkpoint
    model, _, _ = load_model_and_processor(str(ckpt))          # training / merge / perplexity path
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    load_spec(ModelSpec.parse(f"m={ckpt}"))                    # evaluation path
    load_processor(str(ckpt))                                  # validation path
    assert not marker.exists()
    # the same checkpoint with the option on does run it: the check above could fail
    code = f"from transformers import AutoConfig; AutoConfig.from_pretrained({str(ckpt)!r}, trust_remote_code=True)"
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert marker.exists()


def test_adapters_and_fully_trained_modules_are_saved_as_safetensors(tiny_models, tmp_path):
    from safetensors.torch import load_file

    from data_process.synth import generate
    from train.finetune import parse_args, run

    data = generate(tmp_path / "synth", n_train=2, n_val=1, n_test=1, size=64, seed=4)
    out = tmp_path / "run"
    run(*parse_args(["--model_name_or_path", str(tiny_models["qwen2_vl"]), "--train_data", data["train"],
                     "--output_dir", str(out), "--stage", "2", "--train_merger", "full", "--max_steps", "1",
                     "--save_strategy", "steps", "--save_steps", "1", "--per_device_train_batch_size", "2",
                     "--use_cpu", "--report_to", "none", "--dataloader_num_workers", "0"]))
    # the only pickles: the Trainer's state files, read back with weights_only=True (test above), and
    # training_args.bin, which the Trainer writes and nothing reads
    trainer_state = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt", "training_args.bin"}
    for d in (out, out / "checkpoint-1"):
        files = {f.name for f in d.iterdir() if f.is_file()}
        assert "adapter_model.safetensors" in files, files
        pickles = {f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))}
        assert pickles <= trainer_state, pickles
        weights = load_file(d / "adapter_model.safetensors")
        assert any("lora_" in k for k in weights) and any("merger" in k and "lora_" not in k for k in weights)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_llm_endpoint_times_out_retries_and_never_shows_the_key(monkeypatch, caplog):
    """The reasoning generator's HTTP client (data_process/llm_backends.py, used by reason_direct_gene.py) against
    a server that accepts connections and never answers, and against a port nobody listens on."""
    from data_process.llm_backends import GenerationError, HTTPBackend, RetryPolicy

    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("RELIABILITY_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts, never replies
    try:
        for port, what in [(silent.getsockname()[1], "timed out"), (_free_port(), "refused")]:
            backend = HTTPBackend(f"http://127.0.0.1:{port}/v1", "m", api_key_env="RELIABILITY_TEST_KEY",
                                  policy=RetryPolicy(timeout=0.3, max_retries=2, backoff=0.01))
            t0 = time.time()
            with pytest.raises(GenerationError) as e:
                backend.complete("Is there a lesion?", what="q1")
            assert time.time() - t0 < 5, "no timeout: the client waited on a silent server"
            assert backend.retries == 2 and "after 3 attempts" in str(e.value)
            shown = str(e.value) + caplog.text + json.dumps(backend.describe()) + backend.name
            assert secret not in shown and backend.describe()["api_key_set"] is True
    finally:
        silent.close()


def test_http_calls_in_the_repo_have_timeouts():
    """Any urlopen / requests / httpx call in our code passes an explicit timeout (the default is to wait forever)."""
    http = ("urlopen", "requests.get", "requests.post", "requests.request", "httpx.get", "httpx.post", "httpx.Client")
    bad = []
    for f in _python_files(ROOT):
        if "tests" in f.relative_to(ROOT).parts:
            continue
        for call in _calls(f):
            name = _name(call.func)
            if any(name == h or name.endswith("." + h) for h in http) and _kw(call, "timeout") is None:
                bad.append(f"{f.relative_to(ROOT)}:{call.lineno} {name}")
    assert not bad, bad
