"""The one builder of model + data + collator + trainer, from the config dataclasses (train/config.py).

train.finetune runs `build`; the benchmarks (bench/train_throughput.py, bench/train_modes.py) and the tests take the
same steps one by one where they bring their own model or records, so what they measure is the product's wiring:

    check_config(margs, dargs, sargs, targs, fargs)   refuse wrong combinations before anything loads
    load(margs, dargs, targs)                         -> model, processor, family
    load_splits(dargs, processor)                     -> {"train": records, "eval": records}, validation reports
    prepare_model(model, family, sargs, targs, fargs) -> model with the stage's adapters, vision cache or None
    plan_memory(model, processor, targs, fargs, records)  --memory_budget_gib: row size, GC, loss chunk (or None)
    make_collator(processor, fargs, keepalive)        padded or packed batches
    make_trainer(model, processor, family, targs, sargs, ...)  -> Built (datasets, curriculum, validator, callbacks)
    derived_values(trainer)                           what the run actually used, for run_summary.json
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback, set_seed

from data_process.validate import summary_of, validate_cached
from medvl.collate import VLCollator, make_keepalive
from medvl.encoding import DEFAULT_SYSTEM, IGNORE_INDEX
from medvl.families import ModelFamily
from medvl.liger import apply_liger
from medvl.loading import load_model_and_processor
from medvl.packing import PackedCollator
from medvl.varlen_attention import register as register_varlen
from train.adapters import apply_stage, keep_lora_input_dtype
from train.checkpoints import ManifestOnSave
from train.config import DataArguments, ModelArguments, SpeedArguments, StageArguments, _zero_stage
from train.curriculum import build_plan
from train.data import VLDataset, load_records
from train.early_stopping import EarlyStopping
from train.memory_budget import MemoryPlan, apply_memory_budget, parse_budget
from train.trainer import VLTrainer
from train.validation import GenerationValidator
from train.vision_cache import VisionFeatureCache

log = logging.getLogger(__name__)


@dataclass
class Built:
    """Everything one run is made of; `trainer.train()` runs it."""
    trainer: VLTrainer
    model: torch.nn.Module
    processor: object
    family: ModelFamily
    vision_cache: VisionFeatureCache | None = None
    early: EarlyStopping | None = None
    lr_check: "GroupLRCheck | None" = None
    splits: dict = field(default_factory=dict)    # name -> validated records
    reports: dict = field(default_factory=dict)   # name -> validation report (as_dict)


# ------------------------------------------------------------------------------------------------ checks
def check_one_gpu_per_process(n_gpu: int) -> None:
    """HF's Trainer falls back to nn.DataParallel when one process sees several GPUs; Qwen-VL's vision tower breaks
    under its replicas (found on a 2-GPU machine). One process per GPU is the only supported layout."""
    if n_gpu > 1:
        raise ValueError(f"this process sees {n_gpu} GPUs and would train with nn.DataParallel, which Qwen-VL does not "
                         "support: launch one process per GPU (bash scripts/finetune_lora_mult_gpu.sh, or torchrun "
                         "--nproc_per_node N -m train.finetune ...), or pick one GPU with CUDA_VISIBLE_DEVICES=0")


def check_speed_options(fargs: SpeedArguments, margs: ModelArguments, zero_stage: int) -> SpeedArguments:
    """Refuse combinations that would be wrong, not slow; pick the varlen attention for packed rows."""
    if fargs.packing:
        if margs.attn_implementation in (None, "medvl_varlen"):
            margs.attn_implementation = register_varlen()
        elif margs.attn_implementation != "flash_attention_2":
            raise ValueError(f"--packing needs varlen attention (medvl_varlen, the default, or flash_attention_2); "
                             f"{margs.attn_implementation} would let packed samples attend to each other")
    if fargs.vision_cache and not fargs.packing:
        raise ValueError("--vision_cache needs --packing")
    if zero_stage == 3 and (fargs.chunked_loss or fargs.vision_cache):
        raise ValueError("--chunked_loss / --vision_cache run frozen modules outside the DeepSpeed engine's forward; "
                         "under ZeRO-3 their weights are partitioned: use ZeRO-2, or drop these options")
    return fargs


def early_stopping(sargs: StageArguments, targs, has_eval: bool) -> EarlyStopping | None:
    """The early-stopping callback the stage asks for (train/early_stopping.py), or None."""
    if not sargs.early_stopping_patience:
        return None
    if not has_eval or targs.eval_strategy == "no":
        raise ValueError("--early_stopping_patience needs validation: --eval_data and --eval_strategy steps|epoch")
    metric = targs.metric_for_best_model or "eval_loss"
    greater = targs.greater_is_better if targs.greater_is_better is not None else not metric.endswith("loss")
    return EarlyStopping(metric, sargs.early_stopping_patience, sargs.early_stopping_min_delta, greater)


def check_config(margs: ModelArguments, dargs: DataArguments, sargs: StageArguments, targs,
                 fargs: SpeedArguments | None) -> SpeedArguments:
    """Everything that can be refused from the arguments alone, before a model loads."""
    check_one_gpu_per_process(targs.n_gpu)
    early_stopping(sargs, targs, bool(dargs.eval_data))
    if fargs is not None and fargs.lora_keep_input_dtype and not (targs.bf16 or targs.fp16):
        raise ValueError("--lora_keep_input_dtype needs --bf16 (or --fp16): without autocast the bf16 activations "
                         "would meet the fp32 LoRA weights in one matmul")
    return check_speed_options(fargs or SpeedArguments(), margs, _zero_stage(targs))


# ------------------------------------------------------------------------------------------------ model and data
def model_dtype(margs: ModelArguments, targs) -> str:
    if margs.dtype != "auto":
        return margs.dtype
    return "bfloat16" if targs.bf16 else "float16" if targs.fp16 else "float32"


def load(margs: ModelArguments, dargs: DataArguments, targs):
    """(model, VLProcessor, family) as the arguments ask: dtype from the precision flags, quantized bases on this
    rank's own device."""
    return load_model_and_processor(
        margs.model_name_or_path, family=margs.family, dtype=model_dtype(margs, targs),
        attn_implementation=margs.attn_implementation, trust_remote_code=margs.trust_remote_code,
        min_pixels=margs.min_pixels, max_pixels=margs.max_pixels, max_len=dargs.max_len,
        image_root=dargs.image_root, truncation=dargs.truncation, allow_outside_root=dargs.allow_outside_root,
        system_prompt=DEFAULT_SYSTEM if dargs.system_prompt is None else dargs.system_prompt,
        quantization=margs.quantization, quantize_vision=margs.quantize_vision,
        device_map=None if margs.quantization == "none" else {"": str(targs.device)})


def load_splits(dargs: DataArguments, processor, progress: bool = True) -> tuple[dict, dict]:
    """The train (and eval) records after the validation pass: bad samples are named in the report before any step,
    never met at step N. With validation on, a broken .jsonl line is read as a BadLine and rejected by name.
    Each file of a comma-separated list is validated (or its verdict reused) on its own, so a file checked by
    data_process.validate is not checked again; an id repeated across files is rejected in the later one."""
    bad_lines = "raise" if dargs.skip_validation else "yield"
    paths = {"train": dargs.train_data, **({"eval": dargs.eval_data} if dargs.eval_data else {})}
    if dargs.skip_validation:
        return {name: load_records(p, bad_lines) for name, p in paths.items()}, {}
    splits, reports = {}, {}
    for name, joined in paths.items():
        kept_all, parts, seen = [], [], set()
        for path in [p.strip() for p in joined.split(",") if p.strip()]:
            kept, rep, reused = validate_cached(load_records(path, bad_lines), processor, progress=progress)
            if progress:
                log.info("%s data %s: %s%s", name, path, summary_of(rep),
                         f" (validated before: {reused})" if reused else "")
            repeated = [r for r in kept if str(r["id"]) in seen]
            if repeated:  # the same id in an earlier file: rejected by name, like a repeat within one file
                rep = dict(rep, kept=rep["kept"] - len(repeated), rejected=rep["rejected"] + len(repeated),
                           rejected_by_reason=dict(rep["rejected_by_reason"], duplicate_id_across_files={
                               "count": len(repeated), "ids": [r["id"] for r in repeated]}))
                kept = [r for r in kept if str(r["id"]) not in seen]
            seen.update(str(r["id"]) for r in kept)
            kept_all += kept
            parts.append(dict(rep, file=path, reused_from=reused))
        splits[name] = kept_all
        reports[name] = combine_reports(parts)
        if not kept_all:
            raise ValueError(f"no valid {name} records left after validation: {summary_of(reports[name])}")
    return splits, reports


def combine_reports(parts: list[dict]) -> dict:
    """One split's report from its files' reports (each kept under "files")."""
    by_reason: dict = {}
    for p in parts:
        for reason, entry in p["rejected_by_reason"].items():
            slot = by_reason.setdefault(reason, {"count": 0, "ids": []})
            slot["count"] += entry["count"]
            slot["ids"] += entry["ids"]
    return {"input": sum(p["input"] for p in parts), "kept": sum(p["kept"] for p in parts),
            "rejected": sum(p["rejected"] for p in parts), "rejected_by_reason": by_reason,
            "details": {k: v for p in parts for k, v in p.get("details", {}).items()},
            "max_tokens_kept": max(p.get("max_tokens_kept", 0) for p in parts),
            "reused_from": [p["reused_from"] for p in parts if p["reused_from"]],
            "files": [{k: p[k] for k in ("file", "input", "kept", "rejected", "reused_from")} for p in parts]}


def build_vision_cache(fargs: SpeedArguments, family: ModelFamily, model) -> VisionFeatureCache | None:
    if not fargs.vision_cache:
        return None
    cache = VisionFeatureCache(family, fargs.vision_cache_gib)
    cache.check_frozen(model)
    return cache


def prepare_model(model, family: ModelFamily, sargs: StageArguments, targs, fargs: SpeedArguments | None = None):
    """The stage's adapters / trainable modules, then the vision cache (it checks that the tower is frozen)."""
    model = apply_stage(model, family, sargs)
    if fargs is not None and fargs.lora_keep_input_dtype:
        keep_lora_input_dtype(model)
    if fargs is not None and fargs.liger_kernels:  # after PEFT: liger patches module forwards, LoRA stays inside
        apply_liger(model)
    if targs.gradient_checkpointing:
        model.config.use_cache = False
    return model, build_vision_cache(fargs or SpeedArguments(), family, model)


def sample_lengths(records: list, processor) -> tuple[list[int], list[int]]:
    """(tokens, labelled tokens) per record, by the encoding training runs. The validation pass does not keep them
    (its verdict is often reused from the cache without encoding), so this is one more encoding pass, paid only
    with --memory_budget_gib."""
    tokens, labelled = [], []
    for rec in records:
        enc = processor.encode(rec, train=True)
        tokens.append(len(enc))
        labelled.append(sum(1 for t in enc.labels if t != IGNORE_INDEX))
    return tokens, labelled


LENGTH_SAMPLE = 4096  # records encoded to size random-order rows (plan_memory)


def plan_memory(model, processor, targs, fargs: SpeedArguments, records: list, shuffled: bool = False,
                longest: int | None = None) -> MemoryPlan | None:
    """--memory_budget_gib: plan the packed-row size, gradient checkpointing and loss chunk for a prepared model
    and write them into targs / fargs (train/memory_budget.py); None when the option is off. Every process plans
    the same from the same records, for its own GPU."""
    budget = parse_budget(fargs.memory_budget_gib)
    if budget is None:
        return None
    sampled = shuffled and len(records) > LENGTH_SAMPLE
    if sampled:
        # random rows are sized from the lengths' mean and spread: a fixed random sample estimates them (one
        # encoding pass over every record of a large set would take minutes); ordered rows need every length
        records = random.Random(0).sample(records, LENGTH_SAMPLE)
    tokens, labelled = sample_lengths(records, processor)
    device = targs.device if getattr(targs.device, "type", None) == "cuda" else None
    plan = apply_memory_budget(model, targs, fargs, tokens, budget, labelled=labelled, device=device,
                               shuffled=shuffled, longest=longest if sampled else None)
    if targs.process_index == 0:
        log.info("%s", plan.describe())
    return plan


def make_collator(processor, fargs: SpeedArguments | None = None, keepalive=None):
    fargs = fargs or SpeedArguments()
    if fargs.packing:
        return PackedCollator(processor.pad_token_id, processor.image_token_id, fargs.vision_cache, keepalive)
    return VLCollator(processor.pad_token_id, processor.image_token_id, keepalive=keepalive)


# ------------------------------------------------------------------------------------------------ trainer
class GroupLRCheck(TrainerCallback):
    """At step 0, read the LRs back from the optimizer that steps (DeepSpeed's too) and assert them."""

    def __init__(self):
        self.trainer: VLTrainer | None = None
        self.result: dict = {}

    def on_train_begin(self, args, state, control, **kwargs):
        got, want = self.trainer.optimizer_group_lrs(), self.trainer.expected_group_lrs()
        self.result.update(actual=got, expected={g: want.get(g, args.learning_rate) for g in got})
        bad = {g: (lr, self.result["expected"][g]) for g, lr in got.items()
               if abs(lr - self.result["expected"][g]) > 1e-12}
        if bad:
            raise RuntimeError(f"optimizer learning rates differ from the stage config: {bad}")


def make_trainer(model, processor, family: ModelFamily, targs, sargs: StageArguments, *,
                 dargs: DataArguments | None = None, fargs: SpeedArguments | None = None,
                 train_records: list | None = None, eval_records: list | None = None, vision_cache=None,
                 trainer_cls: type = VLTrainer, callbacks: tuple = ()) -> Built:
    """The trainer for a prepared model (prepare_model): datasets, collator, curriculum, generation validator,
    per-group LRs and the run's callbacks (LR check, checkpoint manifests, early stopping)."""
    fargs = fargs or SpeedArguments()
    # Several processes: a text-only batch still runs the vision tower (ZeRO-3 would hang, DDP would miss grads).
    keepalive = make_keepalive(processor) if targs.world_size > 1 else None
    curriculum = None
    if dargs is not None and train_records:
        curriculum = build_plan(train_records, dargs.curriculum, dargs.curriculum_key, dargs.curriculum_scope)
        if curriculum is not None and targs.train_sampling_strategy != "random":
            raise ValueError(f"--curriculum {dargs.curriculum} orders the data itself; it cannot be combined with "
                             f"--train_sampling_strategy {targs.train_sampling_strategy}")
    validator = None
    if eval_records is not None and dargs is not None and dargs.gen_eval_samples > 0:
        gen_recs = [r for r in eval_records if (r.get("meta") or {}).get("task") != "grounding"]
        validator = GenerationValidator(processor, gen_recs[: dargs.gen_eval_samples], dargs.gen_max_new_tokens,
                                        batch_size=targs.per_device_eval_batch_size)
    early = early_stopping(sargs, targs, eval_records is not None)
    lr_check = GroupLRCheck()
    trainer = trainer_cls(
        model=model, args=targs,
        train_dataset=VLDataset(train_records, processor) if train_records is not None else None,
        eval_dataset=VLDataset(eval_records, processor) if eval_records is not None else None,
        data_collator=make_collator(processor, fargs, keepalive),
        chunked_loss=fargs.chunked_loss, loss_chunk=fargs.loss_chunk, vision_cache=vision_cache,
        processing_class=processor.tokenizer, family=family, validator=validator, curriculum=curriculum,
        group_lrs={"merger": sargs.merger_lr, "llm": sargs.llm_lr, "vision": sargs.vision_lr},
        callbacks=[lr_check, ManifestOnSave()] + ([early] if early else []) + list(callbacks))
    lr_check.trainer = trainer
    if early:
        early.log_fn = trainer.log  # its state goes to TensorBoard and log_history
    return Built(trainer, model, processor, family, vision_cache, early, lr_check)


def start_run(margs: ModelArguments, dargs: DataArguments, sargs: StageArguments, targs):
    """What every stage does first (train/grpo.py too): seed, TensorBoard folder, ZeRO-3's process group, then
    (model, processor, family, validated splits, their reports)."""
    # Seed before the model is built: LoRA's A matrices are drawn in apply_stage, before the Trainer seeds;
    # unseeded, two runs with the same --seed started from different adapters.
    set_seed(targs.seed)
    os.environ["TENSORBOARD_LOGGING_DIR"] = sargs.tensorboard_dir or str(Path(targs.output_dir) / "tensorboard")
    if _zero_stage(targs) == 3:
        import deepspeed  # optional, heavy; ZeRO-3 partitions at load time: the process group must exist first
        deepspeed.init_distributed(dist_backend="gloo" if targs.use_cpu else "nccl")
    model, processor, family = load(margs, dargs, targs)
    splits, reports = load_splits(dargs, processor, progress=targs.process_index == 0)
    return model, processor, family, splits, reports


def build(margs: ModelArguments, dargs: DataArguments, sargs: StageArguments, targs,
          fargs: SpeedArguments | None = None, callbacks: tuple = ()) -> Built:
    """A whole run from its arguments, as `python -m train.finetune` trains it."""
    fargs = check_config(margs, dargs, sargs, targs, fargs)
    model, processor, family, splits, reports = start_run(margs, dargs, sargs, targs)
    model, vision_cache = prepare_model(model, family, sargs, targs, fargs)
    # before the Trainer reads targs; the Trainer's shuffle (no curriculum, no length grouping) bounds rows tighter
    shuffled = dargs.curriculum == "none" and targs.train_sampling_strategy == "random"
    memory_plan = plan_memory(model, processor, targs, fargs, splits["train"], shuffled=shuffled,
                              longest=reports["train"].get("max_tokens_kept") or None)  # validation's longest
    built = make_trainer(model, processor, family, targs, sargs, dargs=dargs, fargs=fargs,
                         train_records=splits["train"], eval_records=splits.get("eval"), vision_cache=vision_cache,
                         callbacks=callbacks)
    built.trainer.memory_plan = memory_plan  # derived_values records it
    return dataclasses.replace(built, splits=splits, reports=reports)


# ------------------------------------------------------------------------------------------------ what was used
def attn_implementations(model) -> dict:
    """The attention each part of the model really runs (varlen registration and fast vision rewrite the configs)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    out = {"model": getattr(cfg, "_attn_implementation", None)}
    for part in ("text_config", "vision_config"):
        sub = getattr(cfg, part, None)
        if sub is not None:
            out[part.removesuffix("_config")] = getattr(sub, "_attn_implementation", None)
    return out


def derived_values(trainer: VLTrainer) -> dict:
    """Values derived from the arguments and the environment, recorded once in run_summary.json."""
    args = trainer.args
    return {
        "training_args": args.to_dict(),  # after parse_args' settings and HF's own __post_init__
        "attn_implementation": attn_implementations(trainer.model),
        "optimizer": trainer.optimizer_name(),
        "world_size": args.world_size,
        "effective_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        # --memory_budget_gib's choice (train/memory_budget.py); training_args above already show its values
        "memory_plan": dataclasses.asdict(plan) if (plan := getattr(trainer, "memory_plan", None)) else None,
    }


def end_distributed() -> None:
    """Leave the process group explicitly once every rank is done: left to interpreter exit, gloo's teardown can
    abort a finished process ("terminate called without an active exception")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
