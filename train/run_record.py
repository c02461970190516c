"""What every stage's run shares around its training loop (train.finetune for stages 1–2, train.grpo for stage 3):
the checkpoint it resumes from, the common fields of run_summary.json, and the files a finished stage leaves."""
from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from medvl.jsonio import write_json
from train.adapters import trainable_summary
from train.builder import derived_values
from train.checkpoints import last_complete_checkpoint, verify_checkpoint
from train.config import SpeedArguments

log = logging.getLogger(__name__)


def resume_point(sargs, targs) -> str | None:
    """The last complete checkpoint under output_dir when --resume, verified against its manifest before the
    Trainer (or DeepSpeed) reads any of its files; None to start from scratch."""
    out = Path(targs.output_dir)
    if not (sargs.resume and out.is_dir()):
        return None
    resume = last_complete_checkpoint(out)  # not get_last_checkpoint: it takes a half-written one
    if targs.process_index == 0:
        log.info("resuming from %s", resume or "scratch (no checkpoint found)")
    if resume:
        verify_checkpoint(resume, sargs.trust_checkpoint)
    return resume


def common_summary(margs, dargs, sargs, targs, fargs, trainer, family, *, train_seconds: float, train_metrics,
                   lr_check, reports: dict, resume: str | None) -> dict:
    """The run_summary.json fields every stage records; each stage adds its own."""
    return {
        "stage": sargs.stage, "family": family.name, "base": margs.model_name_or_path,
        "train_seconds": round(train_seconds, 2), "train_metrics": train_metrics,
        "optimizer_lrs": lr_check.result, "trainable": trainable_summary(trainer.model, family),
        "validation_reports": reports, "modes": sargs.modes, "quantization": margs.quantization,
        "resumed_from": resume,
        "args": {"model": asdict(margs), "data": asdict(dargs), "stage": asdict(sargs),
                 "speed": asdict(fargs or SpeedArguments())},
        "tensorboard_dir": os.environ["TENSORBOARD_LOGGING_DIR"],
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else None,
        # training_args, attn_implementation, optimizer, world_size, effective_batch_size
        **derived_values(trainer),
    }


def finish_stage(trainer, processor, targs, stage: int, summary: dict, extra: dict | None = None) -> None:
    """Rank 0 writes the processor beside the adapter, run_summary.json, any `extra` {file name: json data} and
    STAGE_DONE (written last: the pipeline skips a stage that has it); then every rank waits for it."""
    out = Path(targs.output_dir)
    if trainer.is_world_process_zero():
        processor.tokenizer.save_pretrained(out)
        processor.image_processor.save_pretrained(out)
        write_json(out / "run_summary.json", summary)
        for name, data in (extra or {}).items():
            write_json(out / name, data, indent=None)
        (out / "STAGE_DONE").write_text(f"stage {stage}\n")
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
