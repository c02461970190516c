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

import logging
import os
import sys
import time
from pathlib import Path

import torch.distributed as dist

from medvl.checkpoint_path import CheckpointNotFound
from medvl.liger import LigerUnavailable
from train.builder import build, end_distributed
from train.checkpoints import UntrustedCheckpoint
from train.config import DataArguments, ModelArguments, SpeedArguments, StageArguments, parse_args
from train.memory_budget import BudgetTooSmall
from train.run_record import common_summary, finish_stage, resume_point

log = logging.getLogger("train.finetune")


def run(margs: ModelArguments, dargs: DataArguments, sargs: StageArguments, targs,
        fargs: SpeedArguments | None = None) -> dict:
    if sargs.stage == 3:  # GRPO through TRL (train/grpo.py); imported here: TRL takes seconds to import
        from train import grpo
        return grpo.run(margs, dargs, sargs, targs, fargs)
    built = build(margs, dargs, sargs, targs, fargs)  # train/builder.py: model, data, collator, trainer
    trainer = built.trainer
    resume = resume_point(sargs, targs)
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(targs.output_dir))  # adapter (+ any fully trained modules) in safetensors
    final_eval = {}
    if trainer.eval_dataset is not None:  # reuse the in-loop evaluation of the last step instead of running it twice
        at_end = [h for h in trainer.state.log_history if h.get("step") == trainer.state.global_step
                  and any(k.startswith("eval_") for k in h)]
        final_eval = {k: v for h in at_end for k, v in h.items()} if at_end else trainer.evaluate()
    train_records = built.splits["train"]
    summary = {
        **common_summary(margs, dargs, sargs, targs, fargs, trainer, built.family, train_seconds=time.time() - t0,
                         train_metrics=result.metrics, lr_check=built.lr_check, reports=built.reports, resume=resume),
        "final_eval": final_eval,
        "early_stopping": built.early.summary() if built.early else None,
        "failed_at_train_time": _over_ranks(trainer.failed_at_train_time),
        "failed_at_eval_time": _over_ranks(trainer.failed_at_eval_time),
        "vision_cache": built.vision_cache.summary() if built.vision_cache else None,
        "curriculum": (trainer.curriculum_sampler.describe(train_records) if trainer.curriculum_sampler
                       else {"curriculum": "none"}),
    }
    # the full order, record ids per planned epoch
    order = {"curriculum_order.json": trainer.curriculum_sampler.order_ids(train_records)} \
        if trainer.curriculum_sampler else None
    finish_stage(trainer, built.processor, targs, sargs.stage, summary, order)
    return summary


def _over_ranks(failed: dict) -> dict:
    """{id: reason} from every process (each rank's dataloader meets its own records), sorted by id."""
    parts = [failed]
    if dist.is_available() and dist.is_initialized():
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, failed)
    return dict(sorted((k, v) for part in parts for k, v in part.items()))


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        margs, dargs, sargs, targs, fargs = parse_args(argv)  # recipe files first, then flags (train/config.py)
    except ValueError as e:  # a bad flag or recipe value: one line naming it, not a traceback
        sys.exit(f"error: {e}")
    try:
        summary = run(margs, dargs, sargs, targs, fargs)
    except (UntrustedCheckpoint, CheckpointNotFound, BudgetTooSmall, LigerUnavailable) as e:
        sys.exit(f"error: {e}")  # one line; CheckpointNotFound: a wrong --model_name_or_path
    end_distributed()  # the process ends here: leave the process group before interpreter exit
    if int(os.environ.get("RANK", "0")) == 0:
        out = Path(targs.output_dir).resolve()
        tb = Path(summary["tensorboard_dir"]).resolve()
        logs = (f"TensorBoard: tensorboard --logdir {tb}" if tb.is_dir() and any(tb.rglob("events.out.tfevents*"))
                else f"no TensorBoard logs (report_to {targs.report_to})")
        print(f"stage {sargs.stage} done: {'adapter' if (out / 'adapter_config.json').exists() else 'checkpoint'} "
              f"in {out}; {logs}")


if __name__ == "__main__":
    main()
