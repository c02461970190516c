"""Training speed: the common HF + PEFT recipe vs this project's training path, same data, one process.

(a) common recipe: HF `Trainer`, PEFT LoRA r16 on the LLM's linear layers (Stage 2) or the merger (Stage 1),
    right-padded batches of 8, gradient checkpointing, sdpa, fused AdamW, bf16.
(b) ours: `train.trainer.VLTrainer` with the options of train/config.py SpeedArguments (packing + varlen attention,
    chunked loss, vision cache in Stage 2), larger packed micro-batches, checkpointing only if asked.
Both: the same records (images 448-560 px a side, questions 8-40 tokens, answers 70% 1-8 tokens / 30% 40-300),
the same LoRA config (r16, alpha 32, dropout 0.05), the same model built from a config with random weights.

Reported per path: real (non-padding) tokens/s and samples/s (median over timed steps), peak memory, MFU, ratio b/a,
and the loss of (a) and (b) on the same 8 samples (same weights, eval mode) with their relative difference.
MFU = (4 * N_llm * T + 2 * N_vit * P) / (step time * peak), with N_llm the LLM's matmul parameters (LM head
included), T real tokens, N_vit the vision tower's parameters, P the patches it actually encoded (0 on cache hits),
4 = forward + input-gradient backward (LoRA: frozen weights get no weight gradient); peak = a measured bf16 matmul.

    python -m bench.train_throughput --config bench/configs/qwen2_vl_2b.json --stage 2 \\
        --variants a b --out bench/results/train_2b_s2.json
    python -m bench.train_throughput --config bench/configs/qwen2_vl_2b.json --stage 2 \\
        --variants trl trl_liger trl_liger_nogc a b@32 --out bench/results/peers_h200.json   # vs the peers
    python -m bench.train_throughput --tiny   # CPU smoke run of every path on the tiny model

Peers (bench/peers.py; need trl, datasets and, for liger, liger-kernel on a GPU): TRL SFTTrainer's documented
vision-language setup (padded, GC on), + liger-kernel (GC on / off); same records, weights, LoRA targets and timer.
Every run reports its trainable parameters and LoRA modules (they must be equal); the peers also report their loss on
the loss-check samples, on all non-padding tokens (as TRL trains) and completion-only (as this project trains).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from peft import LoraConfig, get_peft_model
from PIL import Image
from transformers import Trainer, TrainingArguments

from bench import peers
from bench.compile_llm import compile_decoder_layers
from bench.random_checkpoint import build as build_random_checkpoint
from bench.random_checkpoint import build_in_memory
from medvl.collate import VLCollator
from medvl.encoding import DEFAULT_SYSTEM, VLProcessor
from medvl.families import get_family, resolve_modules
from medvl.liger import apply_liger
from medvl.loading import load_model_and_processor
from medvl.varlen_attention import register
from train.adapters import keep_lora_input_dtype
from train.builder import make_collator, make_trainer, plan_memory, prepare_model
from train.config import SpeedArguments, StageArguments
from train.data import VLDataset
from train.tiny_model import build_tiny_model
from train.trainer import VLTrainer

WORDS = ("is there a lesion in the left upper lobe of the lung what imaging modality was used to acquire this image "
         "does the liver look normal which organ is abnormal where is the mass located is this a ct scan of the chest "
         "the findings show a small effusion with no pneumothorax and a normal cardiac silhouette").split()

# Path (b) variants: each adds one lever to the previous (the ablation ladder), name -> (speed options, trainer args).
# A variant may carry its own micro-batch: "b_pack_chunk@16" (default: --batch_a for a, --batch_b otherwise).
VARIANTS = {
    "a": None,  # the common recipe
    "b_pack": ({"packing": True}, {"gradient_checkpointing": True}),
    "b_pack_chunk": ({"packing": True, "chunked_loss": True}, {"gradient_checkpointing": True}),
    "b_pack_chunk_nogc": ({"packing": True, "chunked_loss": True}, {"gradient_checkpointing": False}),
    "b": ({"packing": True, "chunked_loss": True, "vision_cache": True}, {"gradient_checkpointing": False}),
    "b_gc": ({"packing": True, "chunked_loss": True, "vision_cache": True}, {"gradient_checkpointing": True}),
}
VARIANTS["b_compile"] = VARIANTS["b"]  # b + torch.compile of each decoder layer (bench/compile_llm.py, a lever on trial)
COMPILED = {"b_compile"}
# b + liger-kernel's RMSNorm / SwiGLU (--liger_kernels, medvl/liger.py); its loss and gradients are checked first.
VARIANTS["b_liger"] = ({**VARIANTS["b"][0], "liger_kernels": True}, VARIANTS["b"][1])
VARIANTS["b_gc_liger"] = ({**VARIANTS["b_gc"][0], "liger_kernels": True}, VARIANTS["b_gc"][1])
# b with --memory_budget_gib (the run's --memory_budget_gib, else its --memory_cap_gib): rows, GC and loss chunk planned
# b + --lora_keep_input_dtype (no fp32 copy of each LoRA input); b_fast: both levers
VARIANTS["b_keep"] = ({**VARIANTS["b"][0], "lora_keep_input_dtype": True}, VARIANTS["b"][1])
VARIANTS["b_fast"] = ({**VARIANTS["b_liger"][0], "lora_keep_input_dtype": True}, VARIANTS["b"][1])
VARIANTS["b_budget"] = VARIANTS["b"]
VARIANTS["b_budget_liger"] = VARIANTS["b_liger"]
VARIANTS["b_budget_fast"] = VARIANTS["b_fast"]
BUDGETED = {"b_budget", "b_budget_liger", "b_budget_fast"}
VARIANTS.update({name: "peer" for name in peers.PEERS})  # the tools users pick instead (bench/peers.py)


def parse_variant(spec: str, args) -> tuple[str, int]:
    name, _, batch = spec.partition("@")
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; known: {sorted(VARIANTS)}")
    return name, int(batch) if batch else (args.batch_a if name == "a" or name in peers.PEERS else args.batch_b)


def _words_to_tokens(tok, rng, n_tokens: int) -> str:
    words = []
    while len(tok(" ".join(words))["input_ids"]) < n_tokens:
        words.append(str(rng.choice(WORDS)))
    return " ".join(words)


def make_records(tok, n: int, tmp: Path, seed: int = 0, size=(448, 561)) -> list[dict]:
    rng = np.random.RandomState(seed)
    recs = []
    for i in range(n):
        w, h = rng.randint(size[0], size[1], size=2)
        path = tmp / f"img{i}.png"
        Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")).save(path)
        q = _words_to_tokens(tok, rng, rng.randint(8, 41)) + "?"
        a_len = rng.randint(1, 9) if rng.rand() < 0.7 else rng.randint(40, 301)
        a = _words_to_tokens(tok, rng, a_len)
        recs.append({"id": f"t{i}", "image": str(path), "conversations": [
            {"from": "human", "value": "<image>\n" + q}, {"from": "gpt", "value": a}],
            "meta": {"answer_type": "closed" if a_len <= 8 else "open"}})
    return recs


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measured_peak_flops(device) -> float:
    """bf16 dense matmul rate of this device (the MFU denominator), measured, not from a spec sheet."""
    if device.type != "cuda":
        return float("nan")
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    _sync()
    t0, n = time.perf_counter(), 20
    for _ in range(n):
        a @ a
    _sync()
    return 2 * 8192 ** 3 * n / (time.perf_counter() - t0)


def _timed(trainer_cls):
    """A trainer that times each optimizer step (synchronised) and counts its real tokens / encoded patches."""
    class Timed(trainer_cls):
        def training_step(self, model, inputs, num_items_in_batch=None):
            ids = inputs["input_ids"]
            real = int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else ids.numel()
            n_samples = ids.shape[0] if "cu_seq_lens_q" not in inputs else len(inputs["cu_seq_lens_q"]) - 1
            cache = getattr(self, "vision_cache", None)
            before = cache.stats["misses"] if cache is not None else None
            patches = int(inputs["image_grid_thw"].prod(-1).sum()) if "image_grid_thw" in inputs else 0
            prof = None
            if getattr(self, "profile_at", None) == len(self.step_log):
                prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]
                                              + ([torch.profiler.ProfilerActivity.CUDA] if torch.cuda.is_available() else []))
                prof.__enter__()
            _sync()
            t0 = time.perf_counter()
            loss = super().training_step(model, inputs, num_items_in_batch)
            _sync()
            dt = time.perf_counter() - t0
            if prof is not None:
                prof.__exit__(None, None, None)
                self.profile = top_ops(prof)
                dt = None  # profiled steps are slower: not timed
            if cache is not None and cache.stats["misses"] == before:
                patches = 0  # every image came from the cache: the ViT did not run
            if dt is None:
                self.step_log.append(None)
                return loss
            self.step_log.append({"seconds": dt, "tokens": real, "samples": n_samples, "patches": patches,
                                  "loss": float(loss)})
            return loss
    return Timed


def top_ops(prof, n: int = 12) -> list[dict]:
    """Where one step's device time goes: the n most expensive operators (self time)."""
    cuda = torch.cuda.is_available()
    rows = []
    for e in prof.key_averages():
        t = (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1e3
        rows.append({"op": e.key[:60], "ms": round(t, 2), "calls": e.count})
    rows.sort(key=lambda r: -r["ms"])
    total = sum(r["ms"] for r in rows)
    return [{"total_ms": round(total, 1)}] + rows[:n]


def llm_and_vit_params(model, family) -> tuple[int, int]:
    """(LLM matmul parameters with the LM head, vision-tower parameters): everything outside the family's vision
    tower but the input embedding (a lookup, no matmul); a tied head counts once as a matmul."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    vit_ids = {id(p) for p in family.vision_tower(base).parameters()}
    params = {id(p): p for p in base.parameters()}  # unique: a tied head is the embedding tensor
    vit = sum(params[i].numel() for i in vit_ids)
    emb = base.get_input_embeddings().weight
    head = base.get_output_embeddings().weight
    llm = sum(p.numel() for i, p in params.items() if i not in vit_ids) - emb.numel()
    return llm + (head.numel() if head is emb else 0), vit


def run_peer(spec, model_builder, records, args, stage: int, device) -> dict:
    """A peer of bench/peers.py (TRL SFTTrainer, +liger), on the same records, LoRA targets and step timer as (a)."""
    name, batch = parse_variant(spec, args)
    if stage != 2:
        raise SystemExit(f"{name}: peers are measured in Stage 2 (LLM LoRA) only")
    if name in peers.UNSLOTH:  # Unsloth loads from a path: the same random weights (seed 0), saved first
        ckpt = build_tiny_model(args.tiny, args.tmp / "unsloth_ckpt") if args.tiny else \
            build_random_checkpoint(args.config, str(args.tmp / "unsloth_ckpt"), "bfloat16", device=device.type)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        # this project's LoRA targets come from the architecture alone (meta device: no memory)
        model = load_model_and_processor(str(ckpt), dtype="float32")[0] if args.tiny else \
            build_in_memory(args.config, device="meta")[0]
        family = get_family(model.config)
    else:
        model, processor, family = model_builder(attn="sdpa")
    n_needed = batch * (args.steps + args.warmup)
    recs = (records * (n_needed // len(records) + 1))[:n_needed]
    targets = resolve_modules(model, family.llm_regex(["attn", "ffn"]), "bench")
    targs = dict(output_dir=str(args.tmp / f"out_{spec}"), per_device_train_batch_size=batch,
                 bf16=device.type == "cuda", use_cpu=device.type != "cuda",
                 optim="adamw_torch_fused" if device.type == "cuda" else "adamw_torch", learning_rate=1e-4,
                 max_steps=args.steps + args.warmup, report_to=[], save_strategy="no", logging_steps=10 ** 6,
                 dataloader_num_workers=args.workers, disable_tqdm=True, seed=0, lr_scheduler_type="constant")
    if name in peers.UNSLOTH:
        del model  # only its module names were needed (this project's LoRA targets)
        trainer, collator, fast = peers.build_unsloth_trainer(name, str(ckpt), recs, targets, targs, _timed,
                                                              lora_dropout=args.lora_dropout)
        check = peers.unsloth_loss_check(trainer, collator, fast, records, peers.PEERS[name][1])
        check["lora_targets"] = trainer.lora_target_check
    else:
        trainer, hf_proc = peers.build_trl_trainer(name, model, processor.tokenizer, processor.image_processor, recs,
                                                   targets, targs, _timed, lora_dropout=args.lora_dropout)
        check = peers.loss_check(trainer, hf_proc, records)
    trainer.step_log, trainer.profile_at = [], (args.warmup - 1 if args.profile else None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    log = [s for s in trainer.step_log if s is not None]
    timed = [s for s in trainer.step_log[args.warmup:] if s is not None]
    if not timed:
        raise RuntimeError(f"{name}: no timed steps (steps={args.steps}, warmup={args.warmup})")
    n_llm, n_vit = llm_and_vit_params(trainer.model, family)
    flops = [(4 * n_llm * s["tokens"] + 2 * n_vit * s["patches"]) / s["seconds"] for s in timed]
    liger, gc = peers.PEERS[name]
    return {"variant": spec, "stage": stage, "batch": batch, "peer": name, "liger": liger,
            "gradient_checkpointing": gc, "timed_steps": len(timed),
            "tokens_per_s": statistics.median(s["tokens"] / s["seconds"] for s in timed),
            "samples_per_s": statistics.median(s["samples"] / s["seconds"] for s in timed),
            "median_step_s": statistics.median(s["seconds"] for s in timed),
            "tokens_per_step": statistics.median(s["tokens"] for s in timed),
            "achieved_tflops": statistics.median(flops) / 1e12,
            "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else None,
            "losses": [round(s["loss"], 4) for s in log], "loss_check": check,
            **peers.trainable_summary(trainer.model), "profile": getattr(trainer, "profile", None),
            **({"versions": {n: importlib.metadata.version(n) for n in
                             ("unsloth", "unsloth_zoo", "trl", "datasets", "bitsandbytes")}}
               if name in peers.UNSLOTH else {})}


def run_variant(spec, model_builder, records, args, stage: int, device) -> dict:
    name, batch = parse_variant(spec, args)
    if name in peers.PEERS:
        return run_peer(spec, model_builder, records, args, stage, device)
    speed_opts, targ_opts = VARIANTS[name] or ({}, {"gradient_checkpointing": True})
    model, processor, family = model_builder(attn="medvl_varlen" if speed_opts.get("packing") else "sdpa")
    # Stage 1 trains the merger (its output cannot be cached); Qwen3-VL's deepstack features bypass the merger cache.
    if stage == 1 or not family.supports_vision_cache:
        speed_opts = {k: v for k, v in speed_opts.items() if k != "vision_cache"}
    speed = SpeedArguments(**speed_opts)
    steps, lever, memory_plan = args.steps, None, None
    n_needed = batch * (steps + args.warmup)
    if speed.vision_cache:  # time epoch 2 (all hits): run epoch 1 first over the same records
        recs = records[: batch * max(steps, 2)]
    else:
        recs = (records * (n_needed // len(records) + 1))[:n_needed]
    stage_args = StageArguments(stage=stage, lora_r=16, lora_alpha=32, lora_dropout=args.lora_dropout).apply_preset()
    gc = targ_opts["gradient_checkpointing"]
    targs = TrainingArguments(
        output_dir=str(args.tmp / f"out_{spec}"), per_device_train_batch_size=batch, bf16=device.type == "cuda",
        use_cpu=device.type != "cuda", gradient_checkpointing=gc,
        gradient_checkpointing_kwargs={"use_reentrant": False} if gc else None,
        optim="adamw_torch_fused" if device.type == "cuda" else "adamw_torch", learning_rate=1e-4,
        max_steps=(steps + args.warmup) if not speed.vision_cache else -1,
        num_train_epochs=2 if speed.vision_cache else 1, report_to=[], save_strategy="no", logging_steps=10 ** 6,
        dataloader_num_workers=args.workers, remove_unused_columns=False, label_names=["labels"],
        disable_tqdm=True, seed=0, lr_scheduler_type="constant")
    if name == "a":
        # The common recipe: plain PEFT on the linear layers of the stage's component, HF's Trainer and loss.
        regex = family.merger_regex if stage == 1 else family.llm_regex(["attn", "ffn"])
        targets = resolve_modules(model, regex, "bench")
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=args.lora_dropout,
                                                 target_modules=targets))
        if gc:
            model.config.use_cache = False
        trainer = _timed(Trainer)(model=model, args=targs, train_dataset=VLDataset(recs, processor),
                                  data_collator=VLCollator(processor.pad_token_id, processor.image_token_id))
    else:  # the product's path: train/builder.py, as train.finetune builds it
        if speed.liger_kernels or speed.lora_keep_input_dtype:  # same weights and batch before and after the
            # levers (as prepare_model applies them): are they exact?
            plain = dataclasses.replace(speed, liger_kernels=False, lora_keep_input_dtype=False)
            model, cache = prepare_model(model, family, stage_args, targs, plain)
            lever = lever_check(model, processor, family, stage_args, targs, speed, records)
        else:
            model, cache = prepare_model(model, family, stage_args, targs, speed)
        if name in BUDGETED:  # the product's planning step, on these records in the Trainer's shuffled order
            speed.memory_budget_gib = str(args.memory_budget_gib or args.memory_cap_gib)
            plan = plan_memory(model, processor, targs, speed, records, shuffled=True)
            batch, memory_plan, gc = plan.samples_per_row, dataclasses.asdict(plan), plan.gradient_checkpointing
            recs = records[: batch * max(steps, 2)] if speed.vision_cache else \
                (records * (batch * (steps + args.warmup) // len(records) + 1))[:batch * (steps + args.warmup)]
            if not speed.vision_cache:
                targs.max_steps = (steps + args.warmup) * targs.gradient_accumulation_steps
        if name in COMPILED:
            compile_decoder_layers(model)
        trainer = make_trainer(model, processor, family, targs, stage_args, fargs=speed, train_records=recs,
                               vision_cache=cache, trainer_cls=_timed(VLTrainer)).trainer
    trainer.step_log = []
    trainer.profile_at = args.warmup - 1 if args.profile and not speed.vision_cache else (
        (len(recs) // batch) + 1 if args.profile else None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    per_epoch = max(len(recs) // batch, 1)
    full_log = trainer.step_log
    log = [s for s in full_log if s is not None]
    timed = [s for s in (full_log[per_epoch:] if speed.vision_cache else full_log[args.warmup:]) if s is not None]
    if not timed:
        raise RuntimeError(f"{name}: no timed steps (steps={steps}, warmup={args.warmup})")
    tok_s = statistics.median(s["tokens"] / s["seconds"] for s in timed)
    smp_s = statistics.median(s["samples"] / s["seconds"] for s in timed)
    n_llm, n_vit = llm_and_vit_params(model, family)
    flops = [(4 * n_llm * s["tokens"] + 2 * n_vit * s["patches"]) / s["seconds"] for s in timed]
    out = {"variant": spec, "stage": stage, "batch": batch, "speed": speed_opts, "gradient_checkpointing": gc,
           "compiled_decoder_layers": name in COMPILED, "lever_check": lever,
           "memory_plan": memory_plan, "liger_kernels": speed.liger_kernels,
           "lora_keep_input_dtype": speed.lora_keep_input_dtype,
           "timed_steps": len(timed), "tokens_per_s": tok_s, "samples_per_s": smp_s,
           "median_step_s": statistics.median(s["seconds"] for s in timed),
           "tokens_per_step": statistics.median(s["tokens"] for s in timed),
           "achieved_tflops": statistics.median(flops) / 1e12,
           "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else None,
           "losses": [round(s["loss"], 4) for s in log], **peers.trainable_summary(trainer.model),
           "profile": getattr(trainer, "profile", None)}
    if speed.vision_cache:
        first = [s for s in full_log[1:per_epoch] if s is not None]
        out["first_epoch_tokens_per_s"] = statistics.median(s["tokens"] / s["seconds"] for s in first) if first else None
        out["first_epoch_samples_per_s"] = statistics.median(s["samples"] / s["seconds"] for s in first) if first else None
        out["first_epoch_tflops"] = statistics.median(
            (4 * n_llm * s["tokens"] + 2 * n_vit * s["patches"]) / s["seconds"] for s in first) / 1e12 if first else None
        out["vision_cache"] = trainer.vision_cache.summary()
    del trainer, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def loss_check(model_builder, records, stage: int, tmp: Path) -> dict:
    """(a)'s loss (padded, HF) and (b)'s (packed, varlen, chunked) on the same 8 samples, same weights, eval mode."""
    model, processor, family = model_builder(attn="medvl_varlen")
    dev = next(model.parameters()).device
    args = TrainingArguments(output_dir=str(tmp / "lc"), report_to=[], remove_unused_columns=False,
                             use_cpu=dev.type != "cuda")
    stage_args = StageArguments(stage=stage).apply_preset()
    model = prepare_model(model, family, stage_args, args)[0].eval()
    enc = [processor.encode(r, train=True) for r in records[:8]]

    def loss(speed: SpeedArguments):
        tr = make_trainer(model, processor, family, args, stage_args, fargs=speed).trainer
        batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in make_collator(processor, speed)(enc).items()}
        with torch.no_grad():
            return float(tr.compute_loss(model, batch))
    la = loss(SpeedArguments())
    lb = loss(SpeedArguments(packing=True, chunked_loss=True))
    return {"loss_a": la, "loss_b": lb, "rel_diff": abs(la - lb) / abs(la)}


def lever_check(model, processor, family, stage_args, targs, speed, records) -> dict:
    """Loss and trainable-parameter gradients on the same 8 samples and weights, eval mode (no dropout), under the
    training's autocast, before and after the levers `speed` asks for (--lora_keep_input_dtype, --liger_kernels),
    applied as train.builder.prepare_model applies them: a lever is kept only if these agree."""
    dev = next(model.parameters()).device
    plain = dataclasses.replace(speed, vision_cache=False, liger_kernels=False, lora_keep_input_dtype=False)
    enc = [processor.encode(r, train=True) for r in records[:8]]
    batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in make_collator(processor, plain)(enc).items()}

    def loss_and_grads():
        tr = make_trainer(model, processor, family, targs, stage_args, fargs=plain).trainer
        model.eval()
        model.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(targs.bf16)):  # as Accelerate runs it
            loss = tr.compute_loss(model, batch)
        loss.backward()
        g = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.requires_grad and p.grad is not None])
        model.zero_grad(set_to_none=True)
        model.train()
        return float(loss), g
    l0, g0 = loss_and_grads()
    applied = []
    if speed.lora_keep_input_dtype:
        applied.append(f"keep_lora_input_dtype ({keep_lora_input_dtype(model)} LoRA layers)")
    if speed.liger_kernels:
        applied.append(apply_liger(model))
    l1, g1 = loss_and_grads()
    return {"applied": applied, "exact": l0 == l1 and bool(torch.equal(g0, g1)), "loss_before": l0, "loss_after": l1, "loss_rel_diff": abs(l1 - l0) / abs(l0),
            "grad_cosine": float(torch.nn.functional.cosine_similarity(g0, g1, dim=0)),
            "grad_rel_l2": float((g1 - g0).norm() / g0.norm()), "grad_elements": g0.numel()}


def dataloader_rate(processor, records, n: int = 48) -> dict:
    """CPU side, one worker: decode + resize + tokenise + collate, samples/s."""
    ds = VLDataset(records[:n], processor)
    col = VLCollator(processor.pad_token_id, processor.image_token_id)
    t0 = time.perf_counter()
    for i in range(0, n, 8):
        col([ds[j] for j in range(i, min(i + 8, n))])
    return {"samples_per_s_per_worker": n / (time.perf_counter() - t0)}


def package_versions() -> dict:
    """Versions of the packages the variants run on (None: not installed)."""
    out = {}
    for name in ("peft", "accelerate", "trl", "liger-kernel", "datasets"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def child_command(spec: str, argv: list[str], child_out: Path, args) -> tuple[list[str], dict | None]:
    """The command and environment of one variant's child process. Unsloth peers run through bench/unsloth_child.py
    (Unsloth imported before transformers) with --unsloth_site first on PYTHONPATH (its trl <= 1.15 package set);
    every other child inherits this process's environment."""
    rest = [*argv, "--variants", spec, "--_child", str(child_out)]
    if spec.partition("@")[0] not in peers.UNSLOTH:
        return [sys.executable, "-m", "bench.train_throughput", *rest], None
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(x for x in (args.unsloth_site, os.environ.get("PYTHONPATH")) if x)
    return [sys.executable, "-m", "bench.unsloth_child", *rest], env


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="bench/configs/qwen2_vl_2b.json")
    p.add_argument("--tiny", nargs="?", const="qwen2_vl", default=None, metavar="FAMILY",
                   help="CPU smoke run on the tiny model of FAMILY (default qwen2_vl)")
    p.add_argument("--stage", type=int, default=2, choices=[1, 2])
    p.add_argument("--variants", nargs="+", default=["a", "b"], help=f"of {list(VARIANTS)}, optionally @batch")
    p.add_argument("--n", type=int, default=256, help="distinct records")
    p.add_argument("--steps", type=int, default=12, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch_a", type=int, default=8)
    p.add_argument("--batch_b", type=int, default=32, help="samples packed per row in (b)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--lora_dropout", type=float, default=0.05,
                   help="every variant's LoRA dropout (0: deterministic, to compare per-step losses across variants)")
    p.add_argument("--profile", action="store_true", help="profile one step per variant (not timed)")
    p.add_argument("--memory_cap_gib", type=float, default=None,
                   help="cap every variant's CUDA memory (torch.cuda.set_per_process_memory_fraction): a smaller card")
    p.add_argument("--memory_budget_gib", default=None,
                   help="the b_budget variants' --memory_budget_gib (a number or auto; default: --memory_cap_gib)")
    p.add_argument("--unsloth_site", default="/tmp/site_unsloth",
                   help="the unsloth variants' package dir (scripts/unsloth_wheels.sh), first on their PYTHONPATH")
    p.add_argument("--out", default=None)
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)  # internal: run one variant, write JSON here
    a = p.parse_args(argv)

    register()
    device = torch.device("cuda" if torch.cuda.is_available() and not a.tiny else "cpu")
    tmpdir = tempfile.TemporaryDirectory()
    a.tmp = Path(tmpdir.name)
    if a.tiny:
        ckpt = build_tiny_model(a.tiny, a.tmp / "tiny")

        def builder(attn):
            return load_model_and_processor(str(ckpt), dtype="float32", attn_implementation=attn)
        a.n, a.steps, a.warmup, a.batch_a, a.batch_b, a.workers = 16, 2, 1, 4, 8, 0
        size = (40, 64)
    else:
        def builder(attn):
            model, tok, improc = build_in_memory(a.config, "bfloat16", device="cuda", attn_implementation=attn)
            fam = get_family(model.config)
            return model, VLProcessor(tok, improc, fam, max_len=4096, system_prompt=DEFAULT_SYSTEM), fam
        size = (448, 561)
    if a.memory_cap_gib and not a._child:
        # Under a cap, fragmentation decides what fits: every variant's child (peers too) gets the allocator's
        # expandable segments, as the README advises a user on a small card (unless the caller set the variable).
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    if a._child:  # one variant in a fresh process: a fresh CUDA context, its own peak memory, OOM-safe
        if a.memory_cap_gib and device.type == "cuda":
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, a.memory_cap_gib * 2 ** 30 / total), 0)
        records = json.loads((Path(a._child).parent / "records.json").read_text())
        r = run_variant(a.variants[0], builder, records, a, a.stage, device)
        Path(a._child).write_text(json.dumps(r))
        return
    _, proc0, _ = builder("sdpa")
    records = make_records(proc0.tokenizer, a.n, a.tmp, size=size)
    (a.tmp / "records.json").write_text(json.dumps(records))
    result = {"config": a.config if not a.tiny else f"tiny {a.tiny}", "device": torch.cuda.get_device_name() if device.type == "cuda"
              else "cpu", "torch": torch.__version__, "transformers": transformers.__version__,
              "versions": package_versions(), "lora_dropout": a.lora_dropout, "memory_cap_gib": a.memory_cap_gib,
              "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
              "date": time.strftime("%Y-%m-%d"), "stage": a.stage,
              "peak_bf16_tflops_measured": measured_peak_flops(device) / 1e12,
              "dataloader": dataloader_rate(proc0, records), "loss_check": loss_check(builder, records, a.stage, a.tmp),
              "runs": []}
    del proc0
    torch.cuda.empty_cache()
    for v in a.variants:
        t0 = time.time()
        child_out = a.tmp / f"run_{v}.json"
        cmd, env = child_command(v, argv if argv is not None else sys.argv[1:], child_out, a)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode == 0 and child_out.exists():
            r = json.loads(child_out.read_text())
        else:
            tail = (proc.stderr or "")[-3000:]
            r = {"variant": v, "error": "OOM" if "OutOfMemoryError" in tail else f"rc {proc.returncode}", "stderr_tail": tail,
                 "reason": next((x for x in reversed(tail.splitlines()) if x.strip()), "")[:300]}  # the exception line
        r["wall_s"] = round(time.time() - t0, 1)
        result["runs"].append(r)
        print(json.dumps({k: x for k, x in r.items() if k not in ("profile", "stderr_tail")}), flush=True)
        if "error" in r:
            print(r.get("stderr_tail", r["error"])[-1500:], flush=True)
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(result, indent=1))
    print_summary(result)


def print_summary(result: dict) -> None:
    """The markdown table: every run's rate, memory, MFU, trained parameters, and its ratio to (a) and to the
    fastest peer (bench/peers.py) of the same run; epoch 1 of a vision-cache run as its own row."""
    ok = [r for r in result["runs"] if "error" not in r]
    base = next((r for r in ok if r["variant"] == "a"), None)
    peer_rates = [r["tokens_per_s"] for r in ok if r.get("peer")]
    fastest = max(peer_rates) if peer_rates else None
    peak = result["peak_bf16_tflops_measured"]
    lc = result["loss_check"]
    print(f"\n{result['config']} stage {result['stage']} on {result['device']}; loss a={lc['loss_a']:.4f} "
          f"b={lc['loss_b']:.4f} (rel diff {lc['rel_diff']:.2e}); "
          f"dataloader {result['dataloader']['samples_per_s_per_worker']:.1f} samples/s/worker")
    for r in ok:
        if "loss_check" in r:
            c = r["loss_check"]
            print(f"{r['variant']} loss on the same 8 samples: all non-padding tokens {c['loss_all_tokens']:.4f} "
                  f"({c['label_tokens_all_tokens']} label tokens), completion-only {c['loss_completion_only']:.4f} "
                  f"({c['label_tokens_completion_only']}); first training-step loss {r['losses'][0]}")
    print("| variant | batch | GC | real tokens/s | samples/s | peak GiB | MFU | trainable params (LoRA modules) "
          "| vs a | vs fastest peer |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def row(name, r, rate, samples, tflops):
        ratio = rate / base["tokens_per_s"] if base else float("nan")
        vs_peer = rate / fastest if fastest else float("nan")
        mfu = tflops / peak if peak == peak and tflops is not None else float("nan")
        print(f"| {name} | {r['batch']} | {r['gradient_checkpointing']} | {rate:.0f} | {samples:.2f} | "
              f"{r['peak_gib'] or 0:.1f} | {mfu:.1%} | {r.get('trainable_params', 0):,} ({r.get('lora_modules')}) | "
              f"{ratio:.2f}x | {vs_peer:.2f}x |")

    for r in result["runs"]:
        if "error" in r:
            print(f"| {r['variant']} | | | {r['error'][:40]} | | | | | | |")
            continue
        if r.get("first_epoch_tokens_per_s"):
            row(f"{r['variant']} epoch 1", r, r["first_epoch_tokens_per_s"], r.get("first_epoch_samples_per_s", 0),
                r.get("first_epoch_tflops"))
            row(f"{r['variant']} epoch 2", r, r["tokens_per_s"], r["samples_per_s"], r["achieved_tflops"])
        else:
            row(r["variant"], r, r["tokens_per_s"], r["samples_per_s"], r["achieved_tflops"])

if __name__ == "__main__":
    main()
