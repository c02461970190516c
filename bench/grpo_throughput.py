"""Stage-3 (GRPO) speed on one GPU: generation vs optimisation time per step, through the product's own path.

The run is what `python -m train.finetune train/recipes/stage3.yaml train/recipes/gpu.yaml ...` builds (train.grpo
check_stage3 + build: medvl loading, record validation, the Stage-3 LoRA, RecordPrompts, MedGRPOTrainer, the preset
rewards closed / open_f1 / iou), on a random-weight checkpoint of --config written to a temp dir
(bench/random_checkpoint.py) and synthetic VQA records of data_process/synth.py (512 px images; closed, open and
grounding questions with boxes). Random weights rarely stop early, so the completion length is measured, not assumed.

Per optimizer step (medians over the timed steps after --warmup), each phase synchronised:
  generation    TRL's GRPOTrainer._generate (prompt tokenizing, HF sampling of every completion, decoding)
  scoring       the rest of GRPOTrainer._generate_and_score_completions (rewards, reference-model log-probs for
                the KL term, advantages)
  optimisation  the rest of the step: loss forward + backward (training_step minus the two above), grad clipping,
                optimizer step (on_step_begin -> on_step_end)
  total         between two step ends (adds the dataloader building rows: image loading and preprocessing)
Peak memory: torch.cuda.max_memory_allocated over the timed steps (reset at the end of the last warm-up step), and
over the whole of trainer.train() (reset before it; the model is on the GPU by then; warm-up included).
The loss runs in micro-batches of --batch completions (16: 64 completions of ~450 tokens at once would hold an estimated ~100 GiB
of activations without gradient checkpointing); TRL samples all completions of a step in one generate call.

    python -m bench.grpo_throughput --config bench/configs/qwen2_vl_2b.json --steps 8 --warmup 2 \\
        --out bench/results/grpo_2b_h200.json
    python -m bench.grpo_throughput --tiny   # CPU smoke run on the tiny qwen2_vl model
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from bench.random_checkpoint import build as build_random_checkpoint
from data_process.synth import generate as synth_records
from train import grpo
from train.builder import attn_implementations
from train.config import parse_args
from train.tiny_model import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "train" / "recipes"
RECORDS_PER_IMAGE = 4  # synth: yes/no, modality, open finding, + position and grounding on lesion images (~4 a mean)
# knob -> (GPU default, --tiny default); an explicit flag wins in both modes
DEFAULTS = {"steps": (8, 2), "warmup": (2, 1), "num_generations": (8, 4), "prompts_per_step": (8, 2),
            "max_completion_length": (64, 8), "batch": (16, 4), "image_size": (512, 64), "workers": (8, 0)}


def _now() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


class StepTimer(TrainerCallback):
    """One record per optimizer step; the Timed trainer adds its phases to `cur`. Also snapshots every parameter
    (on the CPU: no GPU memory) to report which ones the run changed."""

    def __init__(self, warmup: int):
        self.warmup, self.steps, self.cur, self.peak_warmup = warmup, [], {}, None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}
        if torch.cuda.is_available() and self.warmup == 0:
            torch.cuda.reset_peak_memory_stats()
        self.last_end = _now()

    def on_step_begin(self, args, state, control, **kwargs):
        self.cur = dict(generation_s=0.0, gen_and_score_s=0.0, training_step_s=0.0, completions=0, tokens=0,
                        prompt_tokens=0)
        self.begin = _now()

    def on_step_end(self, args, state, control, **kwargs):
        t = _now()
        self.cur.update(step_s=t - self.begin, total_s=t - self.last_end)
        self.last_end = t
        self.steps.append(self.cur)
        if len(self.steps) == self.warmup and torch.cuda.is_available():
            self.peak_warmup = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.changed = sorted(n for n, p in model.named_parameters() if not torch.equal(p.detach().cpu(), self.before[n]))
        self.before = None


class Timed(grpo.MedGRPOTrainer):
    """MedGRPOTrainer plus synchronised timers around TRL's private `_generate` and `_generate_and_score_completions`
    (trl 1.16 GRPOTrainer) and the public `training_step`. `bench` is the StepTimer."""
    bench: StepTimer

    def _generate(self, prompts):
        t0 = _now()
        out = super()._generate(prompts)  # (prompt_ids, completion_ids, ...) as lists of token-id lists
        self.bench.cur["generation_s"] += _now() - t0
        self.bench.cur["completions"] += len(out[1])
        self.bench.cur["tokens"] += sum(len(c) for c in out[1])
        self.bench.cur["prompt_tokens"] += sum(len(p) for p in out[0])
        return out

    def _generate_and_score_completions(self, inputs):
        t0 = _now()
        out = super()._generate_and_score_completions(inputs)
        self.bench.cur["gen_and_score_s"] += _now() - t0
        return out

    def training_step(self, model, inputs, num_items_in_batch=None):
        t0 = _now()
        out = super().training_step(model, inputs, num_items_in_batch)
        self.bench.cur["training_step_s"] += _now() - t0
        return out


def stage3_argv(a, ckpt: Path, train_data: str, out_dir: Path, gpu: bool) -> list[str]:
    """The flags `python -m train.finetune` would get: the Stage-3 recipe + device profile, this run's knobs."""
    per_step = a.prompts_per_step * a.num_generations
    batch = min(a.batch, per_step)
    if per_step % batch:
        raise SystemExit(f"error: --batch {batch} must divide prompts_per_step x num_generations = {per_step}")
    return [str(RECIPES / "stage3.yaml"), str(RECIPES / ("gpu.yaml" if gpu else "cpu.yaml")),
            "--model_name_or_path", str(ckpt), "--train_data", train_data, "--output_dir", str(out_dir),
            "--num_generations", str(a.num_generations), "--max_completion_length", str(a.max_completion_length),
            "--beta", str(a.beta), "--weight_decay", str(a.weight_decay), "--per_device_train_batch_size", str(batch),
            "--gradient_accumulation_steps", str(per_step // batch), "--max_steps", str(a.steps + a.warmup),
            "--bf16", str(a.bf16).lower(), "--gradient_checkpointing", str(a.gradient_checkpointing).lower(),
            "--dataloader_num_workers", str(a.workers), "--save_strategy", "no", "--report_to", "none",
            "--logging_steps", "1", "--disable_tqdm", "true", "--seed", "0"]


def summarize(timer: StepTimer, warmup: int) -> dict:
    timed = timer.steps[warmup:]
    if not timed:
        raise SystemExit("error: no timed steps (--steps must be >= 1)")
    for s in timed:
        s["scoring_s"] = s["gen_and_score_s"] - s["generation_s"]
        s["fwd_bwd_s"] = s["training_step_s"] - s["gen_and_score_s"]
        s["optimisation_s"] = s["step_s"] - s["gen_and_score_s"]

    def med(f):
        return statistics.median(f(s) for s in timed)
    completions, tokens = sum(s["completions"] for s in timed), sum(s["tokens"] for s in timed)
    return {
        "timed_steps": len(timed), **{f"median_{k}": med(lambda s, k=k: s[k]) for k in
                                      ("generation_s", "scoring_s", "optimisation_s", "fwd_bwd_s", "total_s")},
        "completions_per_s_generation": med(lambda s: s["completions"] / s["generation_s"]),
        "completions_per_s_total": med(lambda s: s["completions"] / s["total_s"]),
        "generated_tokens_per_s": med(lambda s: s["tokens"] / s["generation_s"]),
        "completions_timed": completions, "completions_all": sum(s["completions"] for s in timer.steps),
        "mean_completion_length": tokens / completions if completions else 0.0,
        "mean_prompt_length": sum(s["prompt_tokens"] for s in timed) / max(completions, 1),
        "steps": [{k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()} for s in timer.steps]}


def versions() -> dict:
    return {n: importlib.metadata.version(n) for n in ("torch", "transformers", "trl", "peft", "accelerate", "datasets")}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="bench/configs/qwen2_vl_2b.json")
    p.add_argument("--tiny", action="store_true", help="CPU smoke run on the tiny qwen2_vl model")
    p.add_argument("--steps", type=int, help="timed optimizer steps (8; --tiny 2)")
    p.add_argument("--warmup", type=int, help="untimed steps first (2; --tiny 1)")
    p.add_argument("--num_generations", type=int, help="completions per prompt (8; --tiny 4)")
    p.add_argument("--prompts_per_step", type=int, help="prompts per optimizer step (8; --tiny 2)")
    p.add_argument("--max_completion_length", type=int, help="max new tokens per completion (64; --tiny 8)")
    p.add_argument("--batch", type=int, help="completions per loss micro-batch (16; --tiny 4), gradient accumulation "
                                             "makes up the step; TRL still samples a whole step's completions at once")
    p.add_argument("--beta", type=float, default=0.04, help="KL weight (stage3.yaml's; 0 drops the reference pass)")
    p.add_argument("--weight_decay", type=float, default=0.0,
                   help="the product's 0 by default; > 0 moves the LoRA weights even where random weights earn every "
                        "completion the same reward (zero advantages, zero gradient), for the only-LoRA-changed check")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="default: on with a GPU")
    p.add_argument("--gradient_checkpointing", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--image_size", type=int, help="synthetic image side in px (512; --tiny 64)")
    p.add_argument("--workers", type=int, help="dataloader workers (gpu.yaml's 8; --tiny 0)")
    p.add_argument("--out", default=None, help="result JSON")
    a = p.parse_args(argv)
    for k, (full, tiny) in DEFAULTS.items():
        if getattr(a, k) is None:
            setattr(a, k, tiny if a.tiny else full)
    gpu = torch.cuda.is_available() and not a.tiny
    a.bf16 = gpu if a.bf16 is None else a.bf16
    tmpdir = tempfile.TemporaryDirectory()
    tmp = Path(tmpdir.name)
    t0 = time.perf_counter()
    if a.tiny:
        ckpt = build_tiny_model("qwen2_vl", tmp / "model")
    else:  # on the GPU: initialising 2B+ random weights on the CPU takes minutes
        ckpt = build_random_checkpoint(a.config, str(tmp / "model"), "bfloat16", device="cuda" if gpu else "cpu")
    n_images = math.ceil(a.prompts_per_step * (a.steps + a.warmup) / RECORDS_PER_IMAGE) + 1
    data = synth_records(tmp / "data", n_train=n_images, n_val=0, n_test=0, size=a.image_size)
    margs, dargs, sargs, targs, fargs = parse_args(stage3_argv(a, ckpt, data["train"], tmp / "out", gpu))
    try:
        grpo.check_stage3(dargs, sargs, targs, fargs)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    timer = StepTimer(a.warmup)
    trainer, model, processor, family, splits, _, _ = grpo.build(margs, dargs, sargs, targs, fargs, callbacks=(timer,))
    # build() constructs MedGRPOTrainer itself: the class swap adds only the timers to the object as built
    trainer.__class__ = Timed
    trainer.bench = timer
    setup_s = time.perf_counter() - t0
    if gpu:  # the checkpoint writer's weights are gone: the whole-run peak starts with the trainer's model
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak_timed = torch.cuda.max_memory_allocated() if gpu else None
    outside = [n for n in timer.changed if not (".lora_" in n and ".default." in n)]
    kinds = [(r["meta"].get("task"), r["meta"].get("answer_type")) for r in splits["train"]]
    result = {
        "bench": "grpo_throughput", "config": "tiny" if a.tiny else a.config, "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name() if gpu else "cpu", "versions": versions(),
        "settings": {"num_generations": a.num_generations, "prompts_per_step": a.prompts_per_step,
                     "completions_per_step": a.prompts_per_step * a.num_generations,
                     "max_completion_length": a.max_completion_length,
                     "per_device_train_batch_size": targs.per_device_train_batch_size,
                     "gradient_accumulation_steps": targs.gradient_accumulation_steps, "beta": sargs.beta,
                     "dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "bf16": a.bf16,
                     "gradient_checkpointing": a.gradient_checkpointing, "weight_decay": a.weight_decay,
                     "learning_rate": sargs.llm_lr, "temperature": trainer.args.temperature,
                     "lora": {"r": sargs.lora_r, "alpha": sargs.lora_alpha, "dropout": sargs.lora_dropout,
                              "targets": sargs.lora_targets, "modes": sargs.modes},
                     "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                     "rewards": sargs.reward_weights, "attn_implementation": attn_implementations(model),
                     "image_size": a.image_size, "dataloader_workers": a.workers, "warmup_steps": a.warmup,
                     "records": {f"{t}/{k}": kinds.count((t, k)) for t, k in sorted(set(kinds))}},
        **summarize(timer, a.warmup),
        "peak_memory": {"timed_steps_gib": peak_timed / 2 ** 30 if gpu else None,
                        "whole_run_gib": max(peak_timed, timer.peak_warmup or 0) / 2 ** 30 if gpu else None,
                        "reset": "at the end of the last warm-up step; whole_run: reset before trainer.train(), warm-up included"},
        "changed_params": len(timer.changed), "only_lora_changed": bool(timer.changed) and not outside,
        "changed_outside_lora": outside[:10], "setup_s": setup_s,
        "trl_log": [{k: h[k] for k in ("reward", "kl", "loss", "grad_norm", "completions/mean_length")
                     if k in h}
                    for h in trainer.state.log_history if "reward" in h]}
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1))
    rows = [("device", result["device"]), ("completions / step", result["settings"]["completions_per_step"]),
            ("generation s/step", f"{result['median_generation_s']:.3f}"),
            ("scoring s/step", f"{result['median_scoring_s']:.3f}"),
            ("optimisation s/step", f"{result['median_optimisation_s']:.3f}"),
            ("total s/step", f"{result['median_total_s']:.3f}"),
            ("completions/s (generation | total)",
             f"{result['completions_per_s_generation']:.1f} | {result['completions_per_s_total']:.1f}"),
            ("generated tokens/s", f"{result['generated_tokens_per_s']:.0f}"),
            ("mean completion length", f"{result['mean_completion_length']:.1f} / {a.max_completion_length}"),
            ("peak GiB (timed | run)", "n/a" if not gpu else
             f"{result['peak_memory']['timed_steps_gib']:.1f} | {result['peak_memory']['whole_run_gib']:.1f}")]
    print("\n| GRPO, " + ("tiny" if a.tiny else Path(a.config).stem) + " | value |\n|---|---|")
    print("\n".join(f"| {k} | {v} |" for k, v in rows))
    return result


if __name__ == "__main__":
    main()
