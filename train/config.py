"""Arguments as dataclasses (parsed by HfArgumentParser; a YAML/JSON recipe file may hold them) and the stage presets.

A stage is data: which modules train, with which adapter and learning rates. `--stage 1|2` picks a preset;
any field given explicitly on the command line or in the recipe wins over the preset.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

# What each stage trains. Values are defaults; explicit arguments override them.
STAGE_PRESETS: dict[int, dict] = {
    # Stage 1, concept alignment: LoRA on the visual merger, ViT and LLM frozen, caption data.
    1: {"train_vision": "frozen", "train_merger": "lora", "train_llm": "frozen", "lora_targets": "attn,ffn",
        "merger_lr": 2e-4, "llm_lr": None},
    # Stage 2, instruction SFT: LoRA on the LLM's attention + FFN, starting from the Stage-1-merged checkpoint.
    2: {"train_vision": "frozen", "train_merger": "frozen", "train_llm": "lora", "lora_targets": "attn,ffn",
        "merger_lr": None, "llm_lr": 1e-4},
}
MODES = ("frozen", "lora", "full")  # per component: vision tower, merger, LLM
QUANTIZATIONS = ("none", "4bit", "8bit")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "checkpoint dir or hub id (Stage 2: the Stage-1-merged dir)"})
    family: str = field(default="auto", metadata={"help": "qwen2_vl | qwen2_5_vl | qwen3_vl | auto (from config)"})
    dtype: str = field(default="auto", metadata={"help": "auto | bfloat16 | float16 | float32"})
    attn_implementation: str | None = field(default=None, metadata={"help": "sdpa | eager | flash_attention_2"})
    min_pixels: int | None = field(default=None, metadata={"help": "image resize lower bound (pixels); same in eval"})
    max_pixels: int | None = field(default=None, metadata={"help": "image resize upper bound (pixels); same in eval"})
    trust_remote_code: bool = field(default=False)
    quantization: str = field(default="none", metadata={
        "help": "none | 4bit (QLoRA: NF4, double quant, 16-bit compute) | 8bit (LLM.int8); needs bitsandbytes. "
                "Only the LLM is quantized unless --quantize_vision; quantized weights train through LoRA only"})
    quantize_vision: bool = field(default=False, metadata={"help": "with --quantization: quantize the ViT and merger too"})

    def __post_init__(self):
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"--quantization must be one of {'|'.join(QUANTIZATIONS)}, got {self.quantization!r}")


@dataclass
class DataArguments:
    train_data: str = field(metadata={"help": "records (.json/.jsonl); comma-separate several files"})
    eval_data: str | None = field(default=None, metadata={"help": "validation records (eval loss + generation metrics)"})
    image_root: str | None = field(default=None, metadata={"help": "base dir for relative image paths"})
    allow_outside_root: bool = field(default=False, metadata={
        "help": "accept relative image paths that leave --image_root (../..); refused by default"})
    max_len: int = field(default=2048, metadata={"help": "max tokens per sample (image tokens included)"})
    truncation: str = field(default="reject", metadata={"help": "reject | text_tail (never cuts image tokens)"})
    system_prompt: str | None = field(default=None, metadata={"help": "custom system prompt; default: the model's"})
    skip_validation: bool = field(default=False, metadata={"help": "skip the pre-training validation pass"})
    gen_eval_samples: int = field(default=64, metadata={"help": "validation subset size for generation metrics (0: off)"})
    gen_max_new_tokens: int = field(default=32)
    curriculum: str = field(default="none", metadata={
        "help": "order of the training data (train/curriculum.py): none (the Trainer's shuffle) | open_then_closed | "
                "closed_then_open | mixed (open/closed interleaved evenly) | custom (--curriculum_key)"})
    curriculum_key: str | None = field(default=None, metadata={
        "help": "custom/mixed: meta fields and value order, e.g. 'task=vqa|grounding,answer_type=open|closed'"})
    curriculum_scope: str = field(default="run", metadata={
        "help": "run: the phases span the whole run | epoch: they repeat in every epoch"})


@dataclass
class StageArguments:
    stage: int = field(default=2, metadata={"help": "1: merger LoRA (alignment) | 2: LLM LoRA (instruction SFT)"})
    train_vision: str | None = field(default=None, metadata={"help": "ViT blocks: frozen | lora (all block linears) | full"})
    train_merger: str | None = field(default=None, metadata={"help": "frozen | lora | full"})
    train_llm: str | None = field(default=None, metadata={"help": "frozen | lora (on --lora_targets) | full"})
    lora_targets: str | None = field(default=None, metadata={"help": "LLM LoRA targets: 'attn', 'ffn', 'attn,ffn' or ''"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    merger_lr: float | None = field(default=None, metadata={"help": "LR of merger params (default: learning_rate)"})
    llm_lr: float | None = field(default=None, metadata={"help": "LR of LLM params (default: learning_rate)"})
    vision_lr: float | None = field(default=None, metadata={"help": "LR of vision-tower params, if any train"})
    resume: bool = field(default=False, metadata={"help": "resume from the last checkpoint in output_dir"})
    trust_checkpoint: bool = field(default=False, metadata={
        "help": "resume even from a checkpoint whose files do not match its manifest, or that has none (it is "
                "unpickled: only for checkpoints you trust)"})
    tensorboard_dir: str | None = field(default=None, metadata={"help": "default: <output_dir>/tensorboard"})
    early_stopping_patience: int = field(default=0, metadata={
        "help": "stop after this many evaluations without improvement of --metric_for_best_model (default eval_loss); "
                "0: off"})
    early_stopping_min_delta: float = field(default=0.0, metadata={"help": "smallest change that counts as improvement"})

    def apply_preset(self) -> "StageArguments":
        """Fill every field left at None from the stage's preset."""
        if self.stage not in STAGE_PRESETS:
            raise ValueError(f"--stage must be one of {sorted(STAGE_PRESETS)}, got {self.stage}")
        targets_given = self.lora_targets is not None
        if self.train_llm is None and targets_given:  # recipes from before train_llm: the target list said it
            self.train_llm = "lora" if self.llm_targets else "frozen"
        for k, v in STAGE_PRESETS[self.stage].items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        for part in ("vision", "merger", "llm"):
            if getattr(self, f"train_{part}") not in MODES:
                raise ValueError(f"--train_{part} must be {'|'.join(MODES)}, got {getattr(self, f'train_{part}')!r}")
        if self.train_llm == "lora" and not self.llm_targets:
            raise ValueError("--train_llm lora needs --lora_targets (attn, ffn or attn,ffn)")
        if self.train_llm != "lora" and targets_given and self.llm_targets:
            raise ValueError(f"--lora_targets {self.lora_targets!r} applies to --train_llm lora, not {self.train_llm}")
        if self.early_stopping_patience < 0 or self.early_stopping_min_delta < 0:
            raise ValueError("--early_stopping_patience and --early_stopping_min_delta must be >= 0")
        return self

    @property
    def modes(self) -> dict[str, str]:
        return {"vision": self.train_vision, "merger": self.train_merger, "llm": self.train_llm}

    @property
    def llm_targets(self) -> list[str]:
        return [t.strip() for t in (self.lora_targets or "").split(",") if t.strip()]


@dataclass
class SpeedArguments:
    """Exact speed-ups (same loss as the padded path, tested): see bench/RESULTS.md for what each buys."""
    packing: bool = field(default=False, metadata={
        "help": "pack each micro-batch into one padding-free row with varlen attention (per_device_train_batch_size "
                "samples per row); needs attn_implementation medvl_varlen (set automatically) or flash_attention_2"})
    chunked_loss: bool = field(default=False, metadata={
        "help": "LM head + cross-entropy only on labelled positions, loss_chunk rows at a time (no full logits)"})
    loss_chunk: int = field(default=4096, metadata={"help": "rows of logits alive at once with --chunked_loss"})
    vision_cache: bool = field(default=False, metadata={
        "help": "Stage 2: keep the frozen ViT+merger output per image in host RAM, reuse it from epoch 2 "
                "(needs --packing; not Qwen3-VL; not ZeRO-3)"})
    vision_cache_gib: float = field(default=16.0, metadata={"help": "host-RAM bound of the vision cache"})


def _finetune_doc() -> str:
    import train.finetune
    return train.finetune.__doc__


def parse_args(argv=None):
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser((ModelArguments, DataArguments, StageArguments, TrainingArguments, SpeedArguments),
                              prog="python -m train.finetune", description=_finetune_doc(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        margs, dargs, sargs, targs, fargs = parser.parse_yaml_file(argv[0])
    elif len(argv) == 1 and argv[0].endswith(".json"):
        margs, dargs, sargs, targs, fargs = parser.parse_json_file(argv[0])
    else:
        margs, dargs, sargs, targs, fargs = parser.parse_args_into_dataclasses(argv)
    sargs.apply_preset()
    default_optimizer(targs, optim_given=_given(argv, "optim"))
    check_training_modes(margs, sargs, targs)
    targs.remove_unused_columns = False  # our collator consumes whole records
    targs.label_names = ["labels"]       # PEFT hides forward's signature; without this no eval loss
    if targs.gradient_checkpointing and not targs.gradient_checkpointing_kwargs:
        targs.gradient_checkpointing_kwargs = {"use_reentrant": False}
    return margs, dargs, sargs, targs, fargs


def _given(argv: list[str], name: str) -> bool:
    """Whether an option was set explicitly, on the command line or in the recipe file."""
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json")):
        import yaml  # JSON is YAML
        return name in (yaml.safe_load(Path(argv[0]).read_text()) or {})
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in argv)


def default_optimizer(targs, optim_given: bool) -> None:
    """Fused AdamW on GPUs unless the user picked an optimizer (transformers >= 5 with torch >= 2.8 defaults to it
    already; pinning it keeps the choice independent of library versions). 8-bit / paged ones need bitsandbytes."""
    import torch
    from transformers.training_args import OptimizerNames

    if not optim_given and torch.cuda.is_available() and not targs.use_cpu:
        targs.optim = OptimizerNames.ADAMW_TORCH_FUSED
    name = getattr(targs.optim, "value", targs.optim)
    if "8bit" in name or "bnb" in name or name.startswith("paged_"):
        from medvl.quantization import require_bitsandbytes
        require_bitsandbytes()


def check_training_modes(margs: ModelArguments, sargs: StageArguments, targs) -> None:
    """Refuse what cannot train before loading anything: optimizer steps on quantized weights, quantized bases
    under ZeRO-3 (it would partition bitsandbytes' packed weights)."""
    if margs.quantization == "none":
        return
    from medvl.quantization import require_bitsandbytes
    require_bitsandbytes()
    quantized = ("vision", "merger", "llm") if margs.quantize_vision else ("llm",)
    full = [c for c in quantized if sargs.modes[c] == "full"]
    if full:
        raise ValueError(f"--train_{full[0]} full cannot train --quantization {margs.quantization} weights: use lora "
                         f"(QLoRA) for it, or --quantization none" + ("" if full[0] == "llm" else ", or drop --quantize_vision"))
    if _zero_stage(targs) == 3:
        raise ValueError("--quantization does not work with ZeRO-3: use ds_configs/zero2.json (or no DeepSpeed)")


def _zero_stage(targs) -> int:
    cfg = targs.deepspeed
    if not cfg:
        return 0
    if isinstance(cfg, str):
        cfg = json.loads(Path(cfg).read_text())
    return int(cfg.get("zero_optimization", {}).get("stage", 0))
