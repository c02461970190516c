"""Arguments as dataclasses (parsed by HfArgumentParser; a YAML/JSON recipe file may hold them) and the stage presets.

A stage is data: which modules train, with which adapter and learning rates. `--stage 1|2|3` picks a preset;
any field given explicitly on the command line or in the recipe wins over the preset. USAGE is the help text of
`python -m train.finetune` (kept here, beside what it documents, so the parser needs nothing from finetune).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser, TrainingArguments

from medvl.quantization import require_bitsandbytes
from medvl.rewards import parse_rewards
from train.memory_budget import parse_budget

# What each stage trains. Values are defaults; explicit arguments override them.
STAGE_PRESETS: dict[int, dict] = {
    # Stage 1, concept alignment: LoRA on the visual merger, ViT and LLM frozen, caption data.
    1: {"train_vision": "frozen", "train_merger": "lora", "train_llm": "frozen", "lora_targets": "attn,ffn",
        "merger_lr": 2e-4, "llm_lr": None},
    # Stage 2, instruction SFT: LoRA on the LLM's attention + FFN, starting from the Stage-1-merged checkpoint.
    2: {"train_vision": "frozen", "train_merger": "frozen", "train_llm": "lora", "lora_targets": "attn,ffn",
        "merger_lr": None, "llm_lr": 1e-4},
    # Stage 3, reinforcement learning (GRPO through TRL, train/grpo.py): LoRA on the LLM's attention + FFN, starting
    # from the Stage-2-merged checkpoint, verifiable rewards (medvl/rewards.py). A lower LR than SFT: the policy
    # should move a little per step (the KL term, --beta, measures how far).
    3: {"train_vision": "frozen", "train_merger": "frozen", "train_llm": "lora", "lora_targets": "attn,ffn",
        "merger_lr": None, "llm_lr": 1e-5, "rewards": "closed:1.0,open_f1:0.5,iou:1.0"},
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
    stage: int = field(default=2, metadata={"help": "1: merger LoRA (alignment) | 2: LLM LoRA (instruction SFT) | "
                                                    "3: LLM LoRA by GRPO with verifiable rewards (TRL)"})
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
    # Stage 3 (GRPO, train/grpo.py). per_device_train_batch_size counts completions there: each step draws
    # batch * grad-accumulation * processes / num_generations prompts.
    rewards: str | None = field(default=None, metadata={
        "help": "stage 3: rewards and weights, e.g. closed:1.0,open_f1:0.5,iou:1.0,format:0.2 (a recipe may give the "
                "mapping); closed | open_f1 | iou | format | format_think (medvl/rewards.py); each record gets only "
                "the rewards that apply to it (meta.answer_type, meta.task)"})
    num_generations: int = field(default=8, metadata={"help": "stage 3: completions sampled per prompt (the group)"})
    max_completion_length: int = field(default=64, metadata={"help": "stage 3: max new tokens per completion"})
    beta: float = field(default=0.04, metadata={
        "help": "stage 3: KL coefficient against the starting model (0: no reference pass, no KL logged)"})

    def __post_init__(self):
        self.apply_preset()

    def apply_preset(self) -> "StageArguments":
        """Fill every field left at None from the stage's preset (at construction; calling it again is a no-op)."""
        if getattr(self, "_preset_applied", False):
            return self
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
        if self.stage != 3 and self.rewards is not None:
            raise ValueError(f"--rewards applies to --stage 3 (GRPO), not --stage {self.stage}")
        if self.stage == 3:
            parse_rewards(self.rewards)  # a wrong name or weight is refused before anything loads
            if self.num_generations < 2 or self.max_completion_length < 1 or self.beta < 0:
                raise ValueError("--num_generations must be >= 2 (GRPO compares a group), --max_completion_length "
                                 ">= 1 and --beta >= 0")
        if self.early_stopping_patience < 0 or self.early_stopping_min_delta < 0:
            raise ValueError("--early_stopping_patience and --early_stopping_min_delta must be >= 0")
        self._preset_applied = True  # not a field: asdict() and the recorded args leave it out
        return self

    @property
    def modes(self) -> dict[str, str]:
        return {"vision": self.train_vision, "merger": self.train_merger, "llm": self.train_llm}

    @property
    def reward_weights(self) -> dict[str, float]:
        """Stage 3: {reward: weight} in the order given."""
        return parse_rewards(self.rewards)

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
    lora_keep_input_dtype: bool = field(default=False, metadata={
        "help": "with --bf16/--fp16: LoRA branches read the activations in the model's dtype instead of an fp32 "
                "copy per LoRA module (the LoRA weights stay fp32; autocast runs their matmuls in bf16/fp16 either "
                "way). Same loss and gradients without LoRA dropout (tests/test_packing.py); with dropout, the "
                "same masks, the 1/(1-p) scaling rounded in the model's dtype"})
    liger_kernels: bool = field(default=False, metadata={
        "help": "CUDA: liger-kernel's fused RMSNorm and SwiGLU in the LLM (medvl/liger.py; needs liger-kernel); "
                "checked against the unpatched loss and gradients by bench/train_throughput.py"})
    memory_budget_gib: str = field(default="", metadata={
        "help": "with --packing: GPU memory (GiB, per process) the run must fit, or 'auto' (this card less 2 GiB); "
                "picks samples per row (per_device_train_batch_size, the effective batch kept through "
                "gradient_accumulation_steps), gradient checkpointing and loss_chunk (train/memory_budget.py). "
                "'' or 0: off"})

    def __post_init__(self):
        # refused at parse time (one line from train.finetune), before anything loads
        if parse_budget(self.memory_budget_gib) is not None and not self.packing:
            raise ValueError("--memory_budget_gib needs --packing: it sizes the packed rows (samples per row)")


USAGE = """Fine-tune a Qwen-VL model: one entry point, the stage is a config.

    # the launch scripts' Stage 2, by hand: the stage recipe, the device profile, then your flags (they win)
    python -m train.finetune train/recipes/stage2.yaml train/recipes/gpu.yaml \\
        --model_name_or_path out/stage1_merged --train_data train.json --output_dir out/stage2
    # Stage 1: LoRA on the visual merger, caption data
    python -m train.finetune --stage 1 --model_name_or_path Qwen/Qwen2-VL-2B-Instruct \\
        --train_data captions.json --output_dir out/stage1 --bf16
    # merge Stage 1 into the base (Stage 2 trains on top of it)
    python -m train.merge_lora --model_name_or_path Qwen/Qwen2-VL-2B-Instruct --adapter out/stage1 \\
        --output_dir out/stage1_merged
    # Stage 2: LoRA on the LLM's attention + FFN, instruction data, validation every eval_steps
    python -m train.finetune --stage 2 --model_name_or_path out/stage1_merged --train_data train.json \\
        --eval_data val.json --eval_strategy steps --eval_steps 200 --output_dir out/stage2 --bf16
    # QLoRA: 4-bit LLM + LoRA, 8-bit AdamW, early stopping when closed accuracy stalls for 3 evaluations
    python -m train.finetune --stage 2 --model_name_or_path out/stage1_merged --train_data train.json --bf16 \\
        --quantization 4bit --optim adamw_8bit --eval_data val.json --eval_strategy steps --eval_steps 100 \\
        --metric_for_best_model eval_closed_accuracy --early_stopping_patience 3 --output_dir out/stage2_qlora
    # full fine-tuning of merger + LLM, ViT frozen, own LRs (no adapter: the output is a checkpoint)
    python -m train.finetune --stage 2 --train_merger full --train_llm full --merger_lr 1e-5 --llm_lr 5e-6 ...
    # multi-GPU: torchrun --nproc_per_node 4 -m train.finetune ... --deepspeed ds_configs/zero2.json

Recipe files (.yaml/.yml/.json, before any flag) hold field: value pairs; several are applied in order, and flags
given after them win. Every default lives in these dataclasses (TrainArguments for the Trainer's) or in a recipe:
train/recipes/stage1.yaml, stage2.yaml (what the two-stage pipeline runs), gpu.yaml / cpu.yaml (device profiles).
"""
RECIPE_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class TrainArguments(TrainingArguments):
    """transformers' TrainingArguments with this project's defaults (no value is changed after parsing)."""
    # Fused AdamW, pinned so the choice does not depend on the transformers/torch versions' own default.
    optim: str = field(default="adamw_torch_fused", metadata={"help": "optimizer (OptimizerNames); 8-bit / paged "
                                                                     "ones need bitsandbytes"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep False: the collator reads records"})
    # TensorBoard on by default (transformers >= 5.24 defaults to none), under <output_dir>/tensorboard.
    report_to: None | str | list[str] = field(default="tensorboard", metadata={
        "help": "tensorboard (default) | none | another transformers integration"})
    # A fraction (< 1) is a share of the run's steps: ~100 loss points whatever the run length (a 20-step run logs
    # every step, where the fixed 500 logged nothing); ~10 validations when --eval_strategy steps is given.
    logging_steps: float = field(default=0.01, metadata={"help": "steps between logs; < 1: that share of the run"})
    eval_steps: float | None = field(default=0.1, metadata={"help": "steps between validations (--eval_strategy "
                                                                    "steps); < 1: that share of the run"})
    # PEFT hides forward's signature from the Trainer; without this it computes no eval loss.
    label_names: list[str] | None = field(default_factory=lambda: ["labels"], metadata={"help": "keep ['labels']"})
    # Non-reentrant checkpointing (the reentrant one breaks with frozen inputs). Newer transformers renamed the field;
    # the old name only warns there.
    if "activation_checkpointing_kwargs" in TrainingArguments.__dataclass_fields__:
        activation_checkpointing_kwargs: dict | str | None = field(
            default_factory=lambda: {"use_reentrant": False}, metadata={"help": "torch.utils.checkpoint kwargs"})
    else:
        gradient_checkpointing_kwargs: dict | str | None = field(
            default_factory=lambda: {"use_reentrant": False}, metadata={"help": "torch.utils.checkpoint kwargs"})


ARGUMENT_CLASSES = (ModelArguments, DataArguments, StageArguments, TrainArguments, SpeedArguments)


def make_parser() -> HfArgumentParser:
    return HfArgumentParser(ARGUMENT_CLASSES, prog="python -m train.finetune", description=USAGE,
                            formatter_class=argparse.RawDescriptionHelpFormatter)


def split_recipes(argv: list[str]) -> tuple[list[str], list[str]]:
    """(recipe files, flags): the recipe files are the arguments before the first flag. DeepSpeed's launcher puts
    `--local_rank=N` in front of everything; it goes with the flags."""
    recipes, flags, i = [], [], 0
    while i < len(argv):
        if argv[i].startswith("--local_rank="):
            flags.append(argv[i])
        elif not argv[i].startswith("-") and argv[i].endswith(RECIPE_SUFFIXES):
            recipes.append(argv[i])
        else:
            break
        i += 1
    return recipes, flags + argv[i:]


def load_recipes(paths: list[str], known: set[str]) -> dict:
    """The recipes' values merged in order (later files win); a key no argument has is refused by file and name."""
    values: dict = {}
    for path in paths:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}  # JSON is YAML
        if not isinstance(data, dict):
            raise ValueError(f"recipe {path}: expected 'field: value' pairs, got {type(data).__name__}")
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"recipe {path}: no argument named {', '.join(unknown)} "
                             "(python -m train.finetune --help lists them)")
        values.update(data)
    return values


def parse_args(argv=None):
    """Dataclasses from recipe files + flags. Recipes set the parser's defaults, so a flag always wins and argparse
    converts recipe strings (e.g. YAML's 1e-4) like typed flags. Nothing is changed after parsing; the stage preset is
    applied by StageArguments itself and the checks below only refuse."""
    parser = make_parser()
    recipes, flags = split_recipes(list(sys.argv[1:] if argv is None else argv))
    if recipes:
        actions = parser._actions  # argparse keeps no public list; needed to drop `required` for recipe-given fields
        values = load_recipes(recipes, {a.dest for a in actions})
        parser.set_defaults(**values)
        for action in actions:
            if action.dest in values:
                action.required = False
    margs, dargs, sargs, targs, fargs = parser.parse_args_into_dataclasses(flags)
    check_optimizer(targs)
    check_training_modes(margs, sargs, targs)
    return margs, dargs, sargs, targs, fargs


def check_optimizer(targs) -> None:
    """8-bit / paged optimizers need bitsandbytes: say so before loading anything."""
    name = getattr(targs.optim, "value", targs.optim)
    if "8bit" in name or "bnb" in name or name.startswith("paged_"):
        require_bitsandbytes()


def check_training_modes(margs: ModelArguments, sargs: StageArguments, targs) -> None:
    """Refuse what cannot train before loading anything: optimizer steps on quantized weights, quantized bases
    under ZeRO-3 (it would partition bitsandbytes' packed weights)."""
    if margs.quantization == "none":
        return
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
