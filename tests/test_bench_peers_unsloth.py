"""The Unsloth peers of bench/train_throughput.py, on CPU: their names parse, their child process gets the Unsloth
package set first on PYTHONPATH (the other children keep the parent's environment), and where Unsloth cannot be
imported the run records a one-line reason instead of crashing the bench."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import peers
from bench import train_throughput as tt

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def args(tmp_path):
    return argparse.Namespace(batch_a=8, batch_b=32, unsloth_site=str(tmp_path / "site_u"))


def test_unsloth_variants_parse(args):
    assert tt.parse_variant("unsloth", args) == ("unsloth", 8)
    assert tt.parse_variant("unsloth_nogc@4", args) == ("unsloth_nogc", 4)
    assert peers.PEERS["unsloth"][1] == "unsloth" and peers.PEERS["unsloth_nogc"][1] is False
    with pytest.raises(SystemExit):
        tt.parse_variant("unsloth_gc", args)


def test_child_command_puts_the_unsloth_site_first_for_unsloth_only(args, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/tmp/site")
    argv = ["--config", "c.json", "--variants", "unsloth", "b@32"]
    cmd, env = tt.child_command("unsloth@8", argv, tmp_path / "o.json", args)
    assert cmd[1:3] == ["-m", "bench.unsloth_child"]
    assert cmd[-4:] == ["--variants", "unsloth@8", "--_child", str(tmp_path / "o.json")]
    assert env["PYTHONPATH"].split(os.pathsep) == [args.unsloth_site, "/tmp/site"]
    assert env["HF_HUB_OFFLINE"] == "1"
    for other in ("b@32", "trl", "trl_liger_nogc", "a"):
        cmd, env = tt.child_command(other, argv, tmp_path / "o.json", args)
        assert cmd[1:3] == ["-m", "bench.train_throughput"] and env is None  # inherits the parent's environment


def _fake_unsloth_site(tmp_path) -> Path:
    """An unsloth that fails the way the real one does on a machine without a GPU."""
    site = tmp_path / "site_u"
    (site / "unsloth").mkdir(parents=True)
    (site / "unsloth" / "__init__.py").write_text(
        'raise NotImplementedError("Unsloth cannot find any torch accelerator? You need a GPU.\\nmore text")\n')
    return site


def test_unsloth_child_records_one_line_reason(tmp_path):
    site = _fake_unsloth_site(tmp_path)
    out = tmp_path / "run.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))
    proc = subprocess.run([sys.executable, "-m", "bench.unsloth_child", "--variants", "unsloth", "b",
                           "--variants", "unsloth_nogc@4", "--_child", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r == {"variant": "unsloth_nogc@4", "error": "unsloth unavailable: NotImplementedError: "
                 "Unsloth cannot find any torch accelerator? You need a GPU."}


def test_bench_keeps_going_when_unsloth_is_unavailable(tmp_path, capsys):
    site = _fake_unsloth_site(tmp_path)
    out = tmp_path / "bench.json"
    tt.main(["--tiny", "--variants", "unsloth", "a", "--steps", "1", "--unsloth_site", str(site),
             "--out", str(out)])
    runs = json.loads(out.read_text())["runs"]
    assert runs[0]["variant"] == "unsloth" and runs[0]["error"].startswith("unsloth unavailable: NotImplementedError")
    assert "\n" not in runs[0]["error"]
    assert "error" not in runs[1] and runs[1]["tokens_per_s"] > 0  # the next variant still ran
    assert "| unsloth |" in capsys.readouterr().out


def test_lora_target_check_and_rows(tiny_models):
    """The check the Unsloth run reports: LoRA on exactly this project's LLM targets passes, one vision module more
    fails; the notebook rows render one image placeholder through the chat template."""
    from peft import LoraConfig, get_peft_model

    from medvl.families import resolve_modules
    from medvl.loading import load_model_and_processor

    model, processor, fam = load_model_and_processor(str(tiny_models["qwen2_vl"]), dtype="float32")
    targets = resolve_modules(model, fam.llm_regex(["attn", "ffn"]), "bench")
    same = get_peft_model(model, LoraConfig(r=4, target_modules=targets))
    assert peers.lora_target_check(same, targets) == {"same_modules_as_ours": True, "only_unsloth": [],
                                                      "only_ours": []}
    model2 = load_model_and_processor(str(tiny_models["qwen2_vl"]), dtype="float32")[0]
    vit = next(n for n, m in model2.named_modules() if n.startswith("model.visual.blocks.0") and n.endswith("qkv"))
    more = get_peft_model(model2, LoraConfig(r=4, target_modules=targets + [vit]))
    check = peers.lora_target_check(more, targets)
    assert not check["same_modules_as_ours"] and len(check["only_unsloth"]) == 1 and not check["only_ours"]

    rec = {"image": "x.png", "conversations": [{"from": "human", "value": "<image>\nwhat is it?"},
                                               {"from": "gpt", "value": "a lung"}]}
    row = peers.unsloth_dataset([rec])[0]
    proc = peers.hf_processor(processor.tokenizer, processor.image_processor)
    text = proc.apply_chat_template(row["messages"], tokenize=False)
    assert row["images"] == ["x.png"] and text.count("<|vision_start|>") == 1 and "what is it?" in text
    pc = peers.unsloth_dataset([rec], completion_only=True)[0]
    assert pc["prompt"][0]["role"] == "user" and pc["completion"][0]["content"][0]["text"] == "a lung"
