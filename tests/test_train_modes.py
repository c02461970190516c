"""Per-component modes (vision / merger / LLM: frozen | lora | full): exactly the asked parameters change, each with
its own learning rate; adapters with fully trained modules still merge; frozen towers build no graph."""
import json

import pytest
import torch

from tests.test_train import _changed, _train, _weights, synth  # noqa: F401  (synth is a fixture)
from train.adapters import component_of
from train.config import StageArguments
from medvl.families import get_family


def _by_component(keys, family) -> dict[str, set]:
    out: dict[str, set] = {}
    for k in keys:
        out.setdefault(component_of(k, family), set()).add(k)
    return out


def test_stage_presets_and_old_recipes():
    assert StageArguments(stage=1).apply_preset().modes == {"vision": "frozen", "merger": "lora", "llm": "frozen"}
    assert StageArguments(stage=2).apply_preset().modes == {"vision": "frozen", "merger": "frozen", "llm": "lora"}
    # before train_llm existed the LoRA target list alone said whether the LLM trained
    assert StageArguments(stage=1, lora_targets="attn").apply_preset().train_llm == "lora"
    assert StageArguments(stage=2, lora_targets="").apply_preset().train_llm == "frozen"
    with pytest.raises(ValueError, match="applies to --train_llm lora"):
        StageArguments(stage=2, train_llm="full", lora_targets="attn").apply_preset()
    with pytest.raises(ValueError, match="--train_vision must be"):
        StageArguments(stage=2, train_vision="partial").apply_preset()


def test_frozen_towers_run_without_grad_and_trained_ones_with(tiny_models):
    from train.adapters import apply_stage
    from medvl.loading import load_model_and_processor

    def fresh(**stage):
        model, _, fam = load_model_and_processor(str(tiny_models["qwen2_vl"]))
        apply_stage(model, fam, StageArguments(**stage).apply_preset())
        return model

    model = fresh(stage=2)  # ViT and merger frozen: the whole tower
    assert model.model.visual._medvl_no_grad
    model = fresh(stage=1)  # the merger trains: only the ViT blocks
    assert not getattr(model.model.visual, "_medvl_no_grad", False)
    assert all(b._medvl_no_grad for b in model.model.visual.blocks)
    model = fresh(stage=2, train_vision="full", train_llm="frozen")
    assert not any(getattr(m, "_medvl_no_grad", False) for m in model.modules())
    pixels = torch.randn(16, 3 * 2 * 14 * 14)
    out = model.model.visual(pixels, grid_thw=torch.tensor([[1, 4, 4]]))
    hidden = out.pooler_output if hasattr(out, "pooler_output") else out
    assert hidden.requires_grad  # a graph through the trained ViT


def test_full_vision_without_lora_saves_a_checkpoint_that_changed_only_the_vit(tiny_models, synth, tmp_path):
    base = tiny_models["qwen2_vl"]
    s = _train(base, synth["train"], tmp_path / "v", "--stage", 2, "--train_vision", "full", "--train_llm", "frozen",
               "--vision_lr", 1e-2, "--learning_rate", 1e-3, "--max_steps", 2)
    assert s["optimizer_lrs"]["actual"] == {"vision": 1e-2}
    assert s["modes"] == {"vision": "full", "merger": "frozen", "llm": "frozen"} and s["quantization"] == "none"
    assert not (tmp_path / "v" / "adapter_config.json").exists()  # no PEFT: a plain checkpoint
    fam = get_family("qwen2_vl")
    w0, w1 = _weights(base), _weights(tmp_path / "v")  # loads through from_pretrained: a usable checkpoint
    assert _changed(w0, w1) == _by_component(w0, fam)["vision"]


@pytest.mark.parametrize("family,modes,changed_parts", [
    # LoRA on the ViT next to a fully trained merger and LLM (modules_to_save copies, merged back)
    ("qwen2_vl", ["--train_vision", "lora", "--train_merger", "full", "--train_llm", "full"],
     {"vision": "block_linear_weights", "merger": "all", "llm": "all"}),
    # Qwen3-VL: full ViT (its position embedding too), LoRA on merger + deepstack mergers, LLM frozen
    ("qwen3_vl", ["--train_vision", "full", "--train_merger", "lora", "--train_llm", "frozen"],
     {"vision": "all", "merger": "linear_weights"}),
])
def test_mixed_modes_change_exactly_their_parameters_and_merge(family, modes, changed_parts, tiny_models, synth,
                                                               tmp_path):
    from train.merge_lora import merge

    base = tiny_models[family]
    s = _train(base, synth["train"], tmp_path / "run", "--stage", 2, *modes, "--vision_lr", 1e-2, "--merger_lr", 2e-2,
               "--llm_lr", 5e-3, "--learning_rate", 1e-3, "--max_steps", 2)
    want_lrs = {"vision": 1e-2, "merger": 2e-2, "llm": 5e-3}
    assert s["optimizer_lrs"]["actual"] == {g: want_lrs[g] for g in changed_parts}
    assert {c for c, n in s["trainable"]["by_component"].items() if n} == set(changed_parts)
    rep = merge(str(base), str(tmp_path / "run"), str(tmp_path / "merged"))
    assert rep["max_abs_diff_reloaded"] <= 1e-4
    fam = get_family(family)
    w0 = _weights(base)
    changed = _by_component(_changed(w0, _weights(tmp_path / "merged")), fam)
    parts = _by_component(w0, fam)
    assert set(changed) == set(changed_parts), {c: len(v) for c, v in changed.items()}
    for part, which in changed_parts.items():
        if which == "all":
            expect = parts[part]
        elif which == "block_linear_weights":
            expect = {k for k in parts[part] if ".blocks." in k and k.endswith(".weight") and "norm" not in k}
        else:  # linear_weights: what a merger LoRA merges into
            expect = {k for k in parts[part] if k.endswith(".weight") and ("linear_fc" in k or ".mlp." in k)}
        assert changed[part] == expect, (part, sorted(changed[part] ^ expect))


def test_fused_adamw_is_the_dataclass_default_and_a_recipe_or_flag_choice_wins(tmp_path):
    """Defaults live in the dataclasses and recipes; parse_args changes nothing after parsing."""
    from train.config import parse_args

    base = ["--model_name_or_path", "m", "--train_data", "t", "--output_dir", str(tmp_path), "--use_cpu"]
    targs = parse_args(base)[3]
    assert targs.optim == "adamw_torch_fused" and targs.remove_unused_columns is False
    assert targs.label_names == ["labels"]
    (tmp_path / "r.yaml").write_text("optim: adamw_torch\nlearning_rate: 1e-4\nstage: 1\n")
    margs, dargs, sargs, targs, fargs = parse_args([str(tmp_path / "r.yaml"), *base])
    # YAML reads 1e-4 as a string: the parser converts it like a flag's value
    assert targs.optim == "adamw_torch" and targs.learning_rate == 1e-4 and sargs.modes["merger"] == "lora"
    margs, dargs, sargs, targs, fargs = parse_args([str(tmp_path / "r.yaml"), *base, "--optim", "sgd", "--stage", "2"])
    assert targs.optim == "sgd" and sargs.modes == {"vision": "frozen", "merger": "frozen", "llm": "lora"}
    (tmp_path / "bad.yaml").write_text("optimizer: sgd\n")
    with pytest.raises(ValueError, match=r"recipe .*bad.yaml: no argument named optimizer"):
        parse_args([str(tmp_path / "bad.yaml"), *base])
