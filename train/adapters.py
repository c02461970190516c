"""Turn a stage config into trainable parameters: LoRA / full / frozen per component, resolved via the registry."""
from __future__ import annotations

import functools
import logging
import re

import torch

from .config import StageArguments
from .models import ModelFamily, resolve_modules

log = logging.getLogger(__name__)


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


def _vision_blocks(model):
    """The frozen part of the vision tower that the merger LoRA never needs gradients through."""
    for name, mod in model.named_modules():
        if re.search(r"(^|\.)visual\.blocks$", name):
            return list(mod)
    return []


def apply_stage(model, family: ModelFamily, stage: StageArguments):
    """Freeze everything, then make the stage's modules trainable. Returns the (PEFT-wrapped) model."""
    from peft import LoraConfig, get_peft_model

    for p in model.parameters():
        p.requires_grad_(False)
    lora_targets: list[str] = []
    full_modules: list[str] = []
    if stage.train_merger == "lora":
        lora_targets += resolve_modules(model, family.merger_regex, "merger")
    elif stage.train_merger == "full":
        full_modules += resolve_modules(model, family.merger_regex, "merger")
    if stage.llm_targets:
        lora_targets += resolve_modules(model, family.llm_regex(stage.llm_targets), "LLM")
    if not lora_targets and not full_modules:
        raise ValueError(f"stage {stage.stage}: nothing to train (train_merger={stage.train_merger}, "
                         f"lora_targets={stage.lora_targets!r})")
    # The ViT blocks are frozen in both stages: no graph through them (Stage 1 trains only what follows them).
    for block in _vision_blocks(model):
        run_frozen_under_no_grad(block)
    if not lora_targets:  # full merger only: no adapter, train the merger weights themselves
        for name, mod in model.named_modules():
            if name in full_modules:
                for p in mod.parameters():
                    p.requires_grad_(True)
        return model
    cfg = LoraConfig(r=stage.lora_r, lora_alpha=stage.lora_alpha, lora_dropout=stage.lora_dropout,
                     target_modules=lora_targets, modules_to_save=full_modules or None, bias="none")
    model = get_peft_model(model, cfg)
    log.info("stage %d: LoRA on %d modules, full on %d", stage.stage, len(lora_targets), len(full_modules))
    return model


def param_group_of(name: str, family: ModelFamily) -> str:
    """Which learning-rate group a trainable parameter belongs to: merger | llm | vision | other."""
    if re.search(r"(^|\.)visual\.(merger|deepstack_merger_list)(\.|$)", name):
        return "merger"
    if re.search(r"(^|\.)visual(\.|$)", name):
        return "vision"
    if re.search(r"(^|\.)language_model(\.|$)", name):
        return "llm"
    return "other"


def trainable_summary(model) -> dict:
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    return {"trainable_params": n_train, "all_params": n_all, "trainable_pct": 100.0 * n_train / max(n_all, 1)}
