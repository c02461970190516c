"""Training modes on one GPU, Stage 2: bf16 LoRA vs 4-bit QLoRA vs QLoRA + 8-bit AdamW, same data, same 20 steps.

The Qwen2-VL-7B architecture with random weights (bench/configs/qwen2_vl_7b.json), written to local disk once and
loaded through the product loader (medvl/loading.py: --quantization 4bit = NF4 + double quantization, bf16 compute,
vision tower and LM head kept bf16), LoRA r16 on the LLM's attention + FFN (the Stage-2 preset) and VLTrainer with
its per-group optimizer (fused AdamW, or bitsandbytes' 8-bit AdamW) wired by train/builder.py as for train.finetune,
gradient checkpointing, padded batches of 8 (images 448-560 px, bench/train_throughput.make_records). The same seed gives every
variant the same batches and the same LoRA initialisation. The two QLoRA variants share one loaded 4-bit base (the
adapter is unloaded in between).

Reported per variant: peak GPU memory (max allocated over the steps, weights included, reset after loading), real
(non-padding) tokens/s (median over the steps after warm-up), the loss at every step, load and train seconds.

    # 1x H100, bitsandbytes from a carried wheel (one command, ~3-4 min):
    python -m bench.train_modes --out bench/results/train_modes_7b.json
    # CPU smoke run on the tiny model (quantized variants skipped where bitsandbytes cannot run):
    python -m bench.train_modes --tiny
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import TrainingArguments, set_seed

from bench.random_checkpoint import build
from bench.train_throughput import _timed, make_records
from medvl.loading import load_model_and_processor, load_processor
from train.adapters import trainable_summary
from train.builder import make_trainer, prepare_model
from train.config import StageArguments
from train.tiny_model import build_tiny_model
from train.trainer import VLTrainer

# name -> (quantization, optimizer on GPU)
VARIANTS = {
    "bf16_lora": ("none", "adamw_torch_fused"),
    "qlora_4bit": ("4bit", "adamw_torch_fused"),
    "qlora_4bit_adamw8bit": ("4bit", "adamw_8bit"),
}


def bitsandbytes_runs_here(ckpt: str, probe: bool) -> str | None:
    """None if bitsandbytes imports (and, with probe, a 4-bit load of ckpt works: its CPU backend), else why not."""
    try:
        import bitsandbytes  # noqa: F401
        if probe:
            model, _, _ = load_model_and_processor(ckpt, dtype="float32", quantization="4bit")
            del model
        return None
    except Exception as e:  # noqa: BLE001 - the reason is reported, the variant skipped
        return f"{type(e).__name__}: {str(e)[:200]}"


def train_variant(name: str, model, processor, family, records, a, device) -> dict:
    quant, optim = VARIANTS[name]
    stage = StageArguments(stage=2).apply_preset()
    targs = TrainingArguments(
        output_dir=str(a.tmp / f"out_{name}"), per_device_train_batch_size=a.batch, max_steps=a.steps,
        learning_rate=1e-4, lr_scheduler_type="constant", bf16=device.type == "cuda", use_cpu=device.type != "cuda",
        gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
        optim=optim, report_to=[], save_strategy="no",
        logging_steps=1, dataloader_num_workers=a.workers, remove_unused_columns=False, label_names=["labels"],
        disable_tqdm=True, seed=0)
    set_seed(0)  # the same LoRA initialisation for every variant
    model, _ = prepare_model(model, family, stage, targs)  # train/builder.py, as train.finetune builds it
    trainer = make_trainer(model, processor, family, targs, stage, train_records=records,
                           trainer_cls=_timed(VLTrainer)).trainer
    trainer.step_log = []
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        at_start = torch.cuda.memory_allocated() / 2 ** 30
    t0 = time.time()
    trainer.train()
    train_s = time.time() - t0
    steps = [s for s in trainer.step_log if s is not None]
    timed = steps[a.warmup:] or steps
    out = {"variant": name, "quantization": quant, "optimizer": trainer.optimizer_name(),
           "group_lrs": trainer.optimizer_group_lrs(), "trainable": trainable_summary(model, family),
           "steps": len(steps), "batch": a.batch, "timed_steps": len(timed),
           "tokens_per_s": statistics.median(s["tokens"] / s["seconds"] for s in timed),
           "median_step_s": statistics.median(s["seconds"] for s in timed),
           "tokens_per_step": statistics.median(s["tokens"] for s in timed),
           "losses": [round(s["loss"], 4) for s in steps], "train_s": round(train_s, 1),
           "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else None,
           "allocated_at_start_gib": at_start if device.type == "cuda" else None}
    base = model.unload()  # the base without the adapter, for the next variant on the same weights
    del trainer, model
    return out, base


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="bench/configs/qwen2_vl_7b.json")
    p.add_argument("--ckpt_dir", default="/tmp/medvl_bench_7b", help="where the random checkpoint is written (once)")
    p.add_argument("--tiny", action="store_true", help="CPU smoke run on the tiny qwen2_vl model")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3, help="steps left out of tokens/s")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--out", default=None, help="JSON results (default: bench/results/train_modes_7b.json; none for --tiny)")
    a = p.parse_args(argv)

    tmpdir = tempfile.TemporaryDirectory()
    a.tmp = Path(tmpdir.name)
    device = torch.device("cuda" if torch.cuda.is_available() and not a.tiny else "cpu")
    t0 = time.time()
    if a.tiny:
        ckpt, dtype, size = str(build_tiny_model("qwen2_vl", a.tmp / "tiny")), "float32", (40, 64)
        a.steps, a.warmup, a.batch, a.workers = 3, 1, 2, 0
    else:
        ckpt, dtype, size = a.ckpt_dir, "bfloat16", (448, 561)
        if not (Path(ckpt) / "chat_template.jinja").exists():  # written last: a complete checkpoint
            build(a.config, ckpt, "bfloat16", device="cuda" if device.type == "cuda" else "cpu")
    build_s = time.time() - t0
    records = make_records(load_processor(ckpt).tokenizer, a.steps * a.batch, a.tmp, size=size)
    result = {"config": "tiny" if a.tiny else a.config, "device": torch.cuda.get_device_name() if device.type == "cuda"
              else "cpu", "torch": torch.__version__, "transformers": transformers.__version__,
              "date": time.strftime("%Y-%m-%d"), "steps": a.steps, "batch": a.batch, "dtype": dtype,
              "build_s": round(build_s, 1),
              "runs": [], "skipped": {}}
    try:
        import bitsandbytes
        result["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        result["bitsandbytes"] = None
    why_not = bitsandbytes_runs_here(ckpt, probe=device.type != "cuda") \
        if any(VARIANTS[v][0] != "none" for v in a.variants) else None
    base, base_quant = None, None  # one base in memory at a time; variants on the same base share it
    for name in a.variants:
        quant = VARIANTS[name][0]
        if quant != "none" and why_not:
            result["skipped"][name] = why_not
            print(f"{name}: skipped ({why_not})", flush=True)
            continue
        load_s = 0.0
        if quant != base_quant:
            base = None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            t1 = time.time()
            base = load_model_and_processor(ckpt, dtype=dtype, quantization=quant, attn_implementation="sdpa",
                                            device_map={"": 0} if device.type == "cuda" else None)
            load_s, base_quant = time.time() - t1, quant
        model, processor, family = base
        r, unloaded = train_variant(name, model, processor, family, records, a, device)
        base = (unloaded, processor, family)
        r["load_s"] = round(load_s, 1)
        result["runs"].append(r)
        print(json.dumps({k: v for k, v in r.items() if k not in ("trainable",)}), flush=True)
    out = a.out or (None if a.tiny else "bench/results/train_modes_7b.json")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1))
    print(f"\n{result['config']} Stage 2 on {result['device']}, {a.steps} steps of {a.batch}, "
          f"bitsandbytes {result['bitsandbytes']}, total {time.time() - t0:.0f} s")
    print("| variant | optimizer | peak GiB | tokens/s | step s | loss step 1 | loss last | load s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in result["runs"]:
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        print(f"| {r['variant']} | {r['optimizer']} | {peak} | {r['tokens_per_s']:.0f} | {r['median_step_s']:.2f} | "
              f"{r['losses'][0]:.4f} | {r['losses'][-1]:.4f} | {r['load_s']} |")
    for name, why in result["skipped"].items():
        print(f"| {name} | skipped: {why[:60]} | | | | | | |")


if __name__ == "__main__":
    main()
