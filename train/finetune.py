"""Fine-tune a Qwen-VL model: one entry point, the stage is a config.

    # Stage 1: LoRA on the visual merger, caption data
    python -m train.finetune --stage 1 --model_name_or_path Qwen/Qwen2-VL-2B-Instruct \
        --train_data captions.json --output_dir out/stage1 --bf16
    # merge Stage 1 into the base (Stage 2 trains on top of it)
    python -m train.merge_lora --base Qwen/Qwen2-VL-2B-Instruct --adapter out/stage1 --out out/stage1_merged
    # Stage 2: LoRA on the LLM's attention + FFN, instruction data, validation every eval_steps
    python -m train.finetune --stage 2 --model_name_or_path out/stage1_merged --train_data train.json \
        --eval_data val.json --eval_strategy steps --eval_steps 200 --output_dir out/stage2 --bf16
    # QLoRA: 4-bit LLM + LoRA, 8-bit AdamW, early stopping when closed accuracy stalls for 3 evaluations
    python -m train.finetune --stage 2 --model_name_or_path out/stage1_merged --train_data train.json --bf16 \
        --quantization 4bit --optim adamw_8bit --eval_data val.json --eval_strategy steps --eval_steps 100 \
        --metric_for_best_model closed_accuracy --early_stopping_patience 3 --output_dir out/stage2_qlora
    # full fine-tuning of merger + LLM, ViT frozen, own LRs (no adapter: the output is a checkpoint)
    python -m train.finetune --stage 2 --train_merger full --train_llm full --merger_lr 1e-5 --llm_lr 5e-6 ...
    # any of the above from a recipe file:  python -m train.finetune recipe.yaml
    # multi-GPU: torchrun --nproc_per_node 4 -m train.finetune ... --deepspeed ds_configs/zero2.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from train.config import DataArguments, ModelArguments, SpeedArguments, StageArguments, _zero_stage, parse_args

log = logging.getLogger("train.finetune")


def check_one_gpu_per_process(n_gpu: int) -> None:
    """HF's Trainer falls back to nn.DataParallel when one process sees several GPUs; Qwen-VL's vision tower breaks
    under its replicas (found on a 2-GPU machine). One process per GPU is the only supported layout."""
    if n_gpu > 1:
        raise ValueError(f"this process sees {n_gpu} GPUs and would train with nn.DataParallel, which Qwen-VL does not "
                         "support: launch one process per GPU (bash scripts/finetune_lora_mult_gpu.sh, or torchrun "
                         "--nproc_per_node N -m train.finetune ...), or pick one GPU with CUDA_VISIBLE_DEVICES=0")


def _dtype(margs, targs):
    if margs.dtype != "auto":
        return margs.dtype
    return "bfloat16" if targs.bf16 else "float16" if targs.fp16 else "float32"


def check_speed_options(fargs: SpeedArguments, margs: ModelArguments, zero_stage: int) -> SpeedArguments:
    """Refuse combinations that would be wrong, not slow; pick the varlen attention for packed rows."""
    if fargs.packing:
        from medvl.varlen_attention import register
        if margs.attn_implementation in (None, "medvl_varlen"):
            margs.attn_implementation = register()
        elif margs.attn_implementation != "flash_attention_2":
            raise ValueError(f"--packing needs varlen attention (medvl_varlen, the default, or flash_attention_2); "
                             f"{margs.attn_implementation} would let packed samples attend to each other")
    if fargs.vision_cache and not fargs.packing:
        raise ValueError("--vision_cache needs --packing")
    if zero_stage == 3 and (fargs.chunked_loss or fargs.vision_cache):
        raise ValueError("--chunked_loss / --vision_cache run frozen modules outside the DeepSpeed engine's forward; "
                         "under ZeRO-3 their weights are partitioned: use ZeRO-2, or drop these options")
    return fargs


def build_vision_cache(fargs: SpeedArguments, family, model):
    if not fargs.vision_cache:
        return None
    from train.vision_cache import VisionFeatureCache
    cache = VisionFeatureCache(family, fargs.vision_cache_gib)
    cache.check_frozen(model)
    return cache


def early_stopping(sargs: StageArguments, targs, has_eval: bool):
    """The early-stopping callback the stage asks for (train/early_stopping.py), or None."""
    if not sargs.early_stopping_patience:
        return None
    if not has_eval or targs.eval_strategy == "no":
        raise ValueError("--early_stopping_patience needs validation: --eval_data and --eval_strategy steps|epoch")
    from train.early_stopping import EarlyStopping
    metric = targs.metric_for_best_model or "eval_loss"
    greater = targs.greater_is_better if targs.greater_is_better is not None else not metric.endswith("loss")
    return EarlyStopping(metric, sargs.early_stopping_patience, sargs.early_stopping_min_delta, greater)


def run(margs: ModelArguments, dargs: DataArguments, sargs: StageArguments, targs,
        fargs: SpeedArguments | None = None) -> dict:
    import torch
    from transformers import TrainerCallback, set_seed

    from medvl.jsonio import write_json
    from data_process.validate import validate_records
    from train.adapters import apply_stage, trainable_summary
    from medvl.collate import VLCollator, make_keepalive
    from train.curriculum import build_plan
    from medvl.packing import PackedCollator
    from train.checkpoints import ManifestOnSave, last_complete_checkpoint, verify_checkpoint
    from train.data import VLDataset, load_records
    from medvl.loading import load_model_and_processor
    from medvl.encoding import DEFAULT_SYSTEM
    from train.trainer import VLTrainer
    from train.validation import GenerationValidator

    check_one_gpu_per_process(targs.n_gpu)
    early = early_stopping(sargs, targs, bool(dargs.eval_data))
    fargs = check_speed_options(fargs or SpeedArguments(), margs, _zero_stage(targs))
    # Seed before the model is built: LoRA's A matrices are drawn in apply_stage, before the Trainer seeds;
    # unseeded, two runs with the same --seed started from different adapters.
    set_seed(targs.seed)
    out = Path(targs.output_dir)
    os.environ["TENSORBOARD_LOGGING_DIR"] = sargs.tensorboard_dir or str(out / "tensorboard")
    if _zero_stage(targs) == 3:
        import deepspeed  # ZeRO-3 partitions at load time: the process group must exist first
        deepspeed.init_distributed(dist_backend="gloo" if targs.use_cpu else "nccl")
    rank0 = targs.process_index == 0

    model, processor, family = load_model_and_processor(
        margs.model_name_or_path, family=margs.family, dtype=_dtype(margs, targs),
        attn_implementation=margs.attn_implementation, trust_remote_code=margs.trust_remote_code,
        min_pixels=margs.min_pixels, max_pixels=margs.max_pixels, max_len=dargs.max_len,
        image_root=dargs.image_root, truncation=dargs.truncation, allow_outside_root=dargs.allow_outside_root,
        system_prompt=DEFAULT_SYSTEM if dargs.system_prompt is None else dargs.system_prompt,
        quantization=margs.quantization, quantize_vision=margs.quantize_vision,
        device_map=None if margs.quantization == "none" else {"": str(targs.device)})  # each rank its own GPU

    # Validation pass before any step: bad samples are named in the report, never met at step N.
    reports = {}
    # with validation on, a broken .jsonl line is read as a BadLine and rejected by name in the report
    bad_lines = "raise" if dargs.skip_validation else "yield"
    splits = {"train": load_records(dargs.train_data, bad_lines)}
    if dargs.eval_data:
        splits["eval"] = load_records(dargs.eval_data, bad_lines)
    for name in list(splits):
        if dargs.skip_validation:
            continue
        splits[name], rep = validate_records(splits[name], processor, progress=rank0)
        reports[name] = rep.as_dict()
        if rank0:
            log.info("%s data: %s", name, rep.summary())
        if not splits[name]:
            raise ValueError(f"no valid {name} records left after validation: {rep.summary()}")

    model = apply_stage(model, family, sargs)
    vision_cache = build_vision_cache(fargs, family, model)
    # Several processes: a text-only batch still runs the vision tower (ZeRO-3 would hang, DDP would miss grads).
    keepalive = make_keepalive(processor) if targs.world_size > 1 else None
    if targs.gradient_checkpointing:
        model.config.use_cache = False
    train_ds = VLDataset(splits["train"], processor)
    curriculum = build_plan(splits["train"], dargs.curriculum, dargs.curriculum_key, dargs.curriculum_scope)
    if curriculum is not None and targs.train_sampling_strategy != "random":
        raise ValueError(f"--curriculum {dargs.curriculum} orders the data itself; it cannot be combined with "
                         f"--train_sampling_strategy {targs.train_sampling_strategy}")
    eval_ds = VLDataset(splits["eval"], processor) if "eval" in splits else None
    validator = None
    if eval_ds is not None and dargs.gen_eval_samples > 0:
        gen_recs = [r for r in splits["eval"] if (r.get("meta") or {}).get("task") != "grounding"]
        validator = GenerationValidator(processor, gen_recs[: dargs.gen_eval_samples], dargs.gen_max_new_tokens,
                                        batch_size=targs.per_device_eval_batch_size)

    group_lrs = {"merger": sargs.merger_lr, "llm": sargs.llm_lr, "vision": sargs.vision_lr}
    lr_check: dict = {}

    class GroupLRCheck(TrainerCallback):
        """At step 0, read the LRs back from the optimizer that steps (DeepSpeed's too) and assert them."""

        def on_train_begin(self, args, state, control, **kw):
            got, want = trainer.optimizer_group_lrs(), trainer.expected_group_lrs()
            lr_check.update(actual=got, expected={g: want.get(g, args.learning_rate) for g in got})
            bad = {g: (lr, lr_check["expected"][g]) for g, lr in got.items() if abs(lr - lr_check["expected"][g]) > 1e-12}
            if bad:
                raise RuntimeError(f"optimizer learning rates differ from the stage config: {bad}")

    trainer = VLTrainer(
        model=model, args=targs, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=(PackedCollator(processor.pad_token_id, processor.image_token_id, fargs.vision_cache, keepalive)
                       if fargs.packing else VLCollator(processor.pad_token_id, processor.image_token_id,
                                                        keepalive=keepalive)),
        chunked_loss=fargs.chunked_loss, loss_chunk=fargs.loss_chunk, vision_cache=vision_cache,
        processing_class=processor.tokenizer, family=family, group_lrs=group_lrs, validator=validator,
        curriculum=curriculum, callbacks=[GroupLRCheck(), ManifestOnSave()] + ([early] if early else []))
    if early:
        early.log_fn = trainer.log  # its state goes to TensorBoard and log_history

    resume = None
    if sargs.resume and out.is_dir():
        resume = last_complete_checkpoint(out)  # not get_last_checkpoint: it takes a half-written one
        if rank0:
            log.info("resuming from %s", resume or "scratch (no checkpoint found)")
        if resume:  # before the Trainer (or DeepSpeed) reads any of its files
            verify_checkpoint(resume, sargs.trust_checkpoint)
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(out))  # adapter (+ any fully trained modules) in safetensors
    final_eval = {}
    if eval_ds is not None:  # reuse the in-loop evaluation of the last step instead of running it twice
        at_end = [h for h in trainer.state.log_history if h.get("step") == trainer.state.global_step
                  and any(k.startswith("eval_") for k in h)]
        final_eval = {k: v for h in at_end for k, v in h.items()} if at_end else trainer.evaluate()
    summary = {
        "stage": sargs.stage, "family": family.name, "base": margs.model_name_or_path,
        "train_seconds": round(time.time() - t0, 2), "train_metrics": result.metrics, "final_eval": final_eval,
        "optimizer_lrs": lr_check, "trainable": trainable_summary(model, family), "validation_reports": reports,
        "modes": sargs.modes, "quantization": margs.quantization, "optimizer": trainer.optimizer_name(),
        "early_stopping": early.summary() if early else None,
        "failed_at_train_time": _over_ranks(trainer.failed_at_train_time),
        "failed_at_eval_time": _over_ranks(trainer.failed_at_eval_time), "resumed_from": resume,
        "args": {"model": asdict(margs), "data": asdict(dargs), "stage": asdict(sargs), "speed": asdict(fargs)},
        "vision_cache": vision_cache.summary() if vision_cache else None,
        "curriculum": (trainer.curriculum_sampler.describe(splits["train"]) if trainer.curriculum_sampler
                       else {"curriculum": "none"}),
        "tensorboard_dir": os.environ["TENSORBOARD_LOGGING_DIR"], "world_size": targs.world_size,
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else None,
    }
    if trainer.is_world_process_zero():
        processor.tokenizer.save_pretrained(out)
        processor.image_processor.save_pretrained(out)
        write_json(out / "run_summary.json", summary)
        if trainer.curriculum_sampler:  # the full order: record ids per planned epoch
            write_json(out / "curriculum_order.json", trainer.curriculum_sampler.order_ids(splits["train"]), indent=None)
        (out / "STAGE_DONE").write_text(f"stage {sargs.stage}\n")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return summary


def _over_ranks(failed: dict) -> dict:
    """{id: reason} from every process (each rank's dataloader meets its own records), sorted by id."""
    import torch.distributed as dist
    parts = [failed]
    if dist.is_available() and dist.is_initialized():
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, failed)
    return dict(sorted((k, v) for part in parts for k, v in part.items()))


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    margs, dargs, sargs, targs, fargs = parse_args(argv)
    from train.checkpoints import UntrustedCheckpoint
    try:
        summary = run(margs, dargs, sargs, targs, fargs)
    except UntrustedCheckpoint as e:
        sys.exit(f"error: {e}")
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"stage {sargs.stage} done: adapter in {targs.output_dir}, TensorBoard logs in {summary['tensorboard_dir']}")


if __name__ == "__main__":
    main()
