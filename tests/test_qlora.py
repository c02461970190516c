"""QLoRA on CPU with real bitsandbytes: the LLM loads 4-bit / 8-bit, the vision tower stays 16-bit, LoRA trains on top
with an 8-bit AdamW that keeps the per-group LRs, and the adapter merges into the unquantized base."""
import sys

import pytest
import torch

from tests.test_train import _train, synth  # noqa: F401  (synth is a fixture)
from medvl.loading import load_model_and_processor
from medvl.quantization import require_bitsandbytes
from train.adapters import apply_stage
from train.config import StageArguments
from train.merge_lora import _probe_batch, merge

bnb = pytest.importorskip("bitsandbytes")


@pytest.mark.parametrize("kind,layer", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_llm_quantized_vision_kept_16bit_and_lora_gets_gradients(kind, layer, tiny_models):
    model, processor, fam = load_model_and_processor(str(tiny_models["qwen2_vl"]), dtype="float32", quantization=kind)
    types = {n: type(m).__name__ for n, m in model.named_modules()}
    assert types["model.language_model.layers.0.self_attn.q_proj"] == layer
    assert types["model.visual.blocks.0.attn.qkv"] == types["model.visual.merger.mlp.0"] == "Linear"
    assert types["lm_head"] == "Linear" and fam.merger(model).mlp[0].weight.dtype == torch.float32
    model = apply_stage(model, fam, StageArguments(stage=2, train_merger="lora").apply_preset())
    model.train()
    model(**_probe_batch(processor, None)).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(n.endswith((".lora_A.default.weight", ".lora_B.default.weight")) for n in grads)
    # LoRA B starts at zero, so B (not A) gets a gradient at step 0, on the LLM and on the 16-bit merger alike
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)


def test_qlora_run_with_8bit_adamw_then_merge_into_16bit_base(tiny_models, synth, tmp_path):
    base = tiny_models["qwen2_vl"]
    s = _train(base, synth["train"], tmp_path / "q", "--stage", 2, "--quantization", "4bit", "--optim", "adamw_8bit",
               "--train_merger", "lora", "--merger_lr", 3e-4, "--llm_lr", 7e-5, "--learning_rate", 1e-3, "--max_steps", 2)
    assert s["quantization"] == "4bit" and s["optimizer"].startswith("bitsandbytes.")
    assert s["optimizer_lrs"]["actual"] == {"merger": 3e-4, "llm": 7e-5}  # per-group LRs through the 8-bit optimizer
    rep = merge(str(base), str(tmp_path / "q"), str(tmp_path / "m"))
    assert rep["max_abs_diff_reloaded"] <= 1e-4  # merged 16/32-bit model == adapter on the unquantized base
    assert rep["trained_quantization"] == "4bit"
    # the model as trained (NF4 base) differs from the merged one by the quantization error: real, finite, reported
    assert 0 < rep["max_abs_diff_vs_quantized_training"] < rep["logit_scale"]


def test_what_cannot_train_is_refused_up_front(tiny_models, synth, tmp_path):
    with pytest.raises(ValueError, match="--train_llm full cannot train --quantization 4bit"):
        _train(tiny_models["qwen2_vl"], synth["train"], tmp_path / "x", "--quantization", "4bit", "--train_llm", "full")
    with pytest.raises(ValueError, match="drop --quantize_vision"):
        _train(tiny_models["qwen2_vl"], synth["train"], tmp_path / "x", "--quantization", "8bit", "--quantize_vision",
               True, "--train_merger", "full")


def test_missing_bitsandbytes_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import now fails as if not installed
    with pytest.raises(ImportError, match="pip install bitsandbytes"):
        require_bitsandbytes()


def test_stage3_grpo_on_a_4bit_base_trains_the_lora_only(tiny_models, tmp_path):
    """QLoRA in Stage 3: TRL's GRPOTrainer on the NF4 LLM, 8-bit AdamW; the saved result is the LoRA adapter."""
    from safetensors import safe_open
    from transformers import TrainerCallback

    from tests.test_grpo import _yes_no
    from train import grpo
    from train.config import parse_args

    class Seen(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.linear4bit = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    seen = Seen()
    _, files = _yes_no(tmp_path, n_train=4, n_val=2)
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    out = tmp_path / "s3q"
    s = grpo.run(*parse_args([
        str(root / "train/recipes/stage3.yaml"), "--model_name_or_path", str(tiny_models["qwen2_vl"]),
        "--train_data", files["train"], "--output_dir", str(out), "--use_cpu", "--quantization", "4bit",
        "--optim", "adamw_8bit", "--rewards", "closed:1.0", "--per_device_train_batch_size", "4",
        "--num_generations", "4", "--max_completion_length", "2", "--max_steps", "2", "--llm_lr", "1e-3",
        "--save_strategy", "no", "--report_to", "none", "--dataloader_num_workers", "0"]), callbacks=(seen,))
    assert seen.linear4bit > 0  # the policy TRL trained sat on 4-bit LLM linears
    assert s["quantization"] == "4bit" and s["optimizer"].startswith("bitsandbytes.")
    assert s["trainable"]["by_component"]["llm"] > 0 and s["trainable"]["by_component"]["vision"] == 0
    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        assert f.keys() and all(".lora_A." in k or ".lora_B." in k for k in f.keys())
