"""Turn a stage config into trainable parameters: per component frozen | lora | full, module names from the registry.

    component  what it holds                                  LoRA on
    vision     the ViT (patch embedding + blocks)             every linear of the blocks
    merger     the visual merger (+ Qwen3-VL's deepstack)     the merger linears
    llm        the language model and its LM head             --lora_targets (attention / FFN projections)

No LoRA anywhere: no PEFT wrapper; the full components train in place and the run saves a plain checkpoint.
LoRA somewhere: full components become PEFT `modules_to_save` (a trainable copy of each module, saved in the adapter
and swapped in by merge_and_unload), so train/merge_lora.py and eval's adapter specs work unchanged. The copy keeps the
original beside it: a full LLM next to a LoRA costs the LLM's weights twice.
Frozen ViT blocks (the whole tower when the merger is frozen too) run under no_grad: no graph through them.
"""
from __future__ import annotations

import functools
import logging
import re

import torch

from train.config import StageArguments
from medvl.families import ModelFamily, resolve_modules

log = logging.getLogger(__name__)

COMPONENTS = ("vision", "merger", "llm")


def run_frozen_under_no_grad(module: torch.nn.Module) -> None:
    """A frozen tower builds no autograd graph: its forward runs under torch.no_grad()."""
    if getattr(module, "_medvl_no_grad", False):
        return
    forward = module.forward

    @functools.wraps(forward)
    def no_grad_forward(*args, **kwargs):
        with torch.no_grad():
            return forward(*args, **kwargs)

    module.forward = no_grad_forward
    module._medvl_no_grad = True


def run_with_grad(module: torch.nn.Module) -> None:
    """Undo run_frozen_under_no_grad (a module that trains now, on a model object set up before)."""
    if getattr(module, "_medvl_no_grad", False):
        del module.forward  # the instance attribute; the class's forward shows through again
        module._medvl_no_grad = False


def component_of(name: str, family: ModelFamily) -> str:
    """Which component a parameter or module name belongs to: merger | vision | llm | other."""
    if re.search(family.merger_block_regex, name):
        return "merger"
    if re.search(family.vision_regex, name):
        return "vision"
    if re.search(family.llm_full_regex, name):
        return "llm"
    return "other"


def param_group_of(name: str, family: ModelFamily) -> str:
    """The learning-rate group of a trainable parameter: its component."""
    return component_of(name, family)


def _leaf_modules(model, family: ModelFamily, component: str) -> list[str]:
    """Names of the modules that hold the component's parameters directly (what `modules_to_save` copies).
    Leaves, not containers: a wrapped ModuleList would no longer iterate."""
    names = [n for n, m in model.named_modules()
             if any(True for _ in m.parameters(recurse=False)) and component_of(n, family) == component]
    if not names:
        raise ValueError(f"no parameter of the loaded model belongs to the {component} component "
                         f"(registry patterns of {family.name}); cannot train it in full")
    return names


def _refuse_quantized_full(model, family: ModelFamily, component: str) -> None:
    """Quantized weights cannot take optimizer steps: a full component must be 16/32-bit."""
    bad = [n for n, p in model.named_parameters() if component_of(n, family) == component and not p.is_floating_point()]
    if bad:
        raise ValueError(f"--train_{component} full: {len(bad)} {component} weights are quantized (e.g. {bad[0]}); "
                         f"train it with lora (QLoRA), or load it unquantized (--quantization none, or drop "
                         f"--quantize_vision for the vision tower / merger)")


def _no_grad_for_frozen(model, family: ModelFamily, modes: dict[str, str]) -> None:
    root = family.vision_tower(model)
    if modes["vision"] == "frozen" and modes["merger"] == "frozen":
        run_frozen_under_no_grad(root)
        return
    run_with_grad(root)
    for block in family.vision_blocks(model):
        (run_frozen_under_no_grad if modes["vision"] == "frozen" else run_with_grad)(block)


def trainable_by_component(model, family: ModelFamily) -> dict[str, int]:
    out = dict.fromkeys(COMPONENTS + ("other",), 0)
    for name, p in model.named_parameters():
        if p.requires_grad:
            out[component_of(name, family)] += p.numel()
    return out


def apply_stage(model, family: ModelFamily, stage: StageArguments):
    """Freeze everything, then make each component train as its mode says. Returns the (maybe PEFT-wrapped) model."""
    from peft import LoraConfig, get_peft_model

    modes = stage.modes
    for p in model.parameters():
        p.requires_grad_(False)
    lora_targets: list[str] = []
    if modes["vision"] == "lora":
        lora_targets += resolve_modules(model, family.vision_lora_regex, "ViT")
    if modes["merger"] == "lora":
        lora_targets += resolve_modules(model, family.merger_regex, "merger")
    if modes["llm"] == "lora":
        lora_targets += resolve_modules(model, family.llm_regex(stage.llm_targets), "LLM")
    full = [c for c in COMPONENTS if modes[c] == "full"]
    if not lora_targets and not full:
        raise ValueError(f"stage {stage.stage}: nothing to train ({modes}, lora_targets={stage.lora_targets!r})")
    for c in full:
        _refuse_quantized_full(model, family, c)
    if lora_targets:
        to_save = [n for c in full for n in _leaf_modules(model, family, c)]
        cfg = LoraConfig(r=stage.lora_r, lora_alpha=stage.lora_alpha, lora_dropout=stage.lora_dropout,
                         target_modules=lora_targets, modules_to_save=to_save or None, bias="none")
        model = get_peft_model(model, cfg)
    else:  # full fine-tuning only: the weights themselves train, no adapter
        for name, p in model.named_parameters():
            if component_of(name, family) in full:
                p.requires_grad_(True)
    _no_grad_for_frozen(model, family, modes)
    counts = trainable_by_component(model, family)
    wrong = {c: n for c, n in counts.items() if (n > 0) != (modes.get(c, "frozen") != "frozen")}
    if wrong:
        raise RuntimeError(f"trainable parameters per component {counts} do not match the modes {modes}: {wrong}")
    log.info("stage %d: %s; LoRA on %d modules; trainable per component %s", stage.stage, modes, len(lora_targets), counts)
    return model


def keep_lora_input_dtype(model) -> int:
    """--lora_keep_input_dtype: PEFT copies each LoRA module's input to its fp32 weight dtype (an activation-sized
    copy per module, then autocast copies it back to bf16 for the matmul); this turns that cast off (PEFT's own
    switch, the one its `disable_input_dtype_casting` helper flips). Returns the number of LoRA layers changed."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for m in layers:
        m.cast_input_dtype_enabled = False
    return len(layers)


def trainable_summary(model, family: ModelFamily | None = None) -> dict:
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    out = {"trainable_params": n_train, "all_params": n_all, "trainable_pct": 100.0 * n_train / max(n_all, 1)}
    if family is not None:
        out["by_component"] = trainable_by_component(model, family)
    return out
