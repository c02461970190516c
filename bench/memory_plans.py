"""What `--memory_budget_gib` would plan for the bench's records (bench/train_throughput.py make_records), per model
config and budget, on the CPU (meta-device model: no weights): the predictions the GPU `caps` run checks.

    python -m bench.memory_plans --configs bench/configs/qwen2_vl_2b.json bench/configs/qwen2_vl_7b.json \\
        --budgets 22 44 137.4 --rows 32 64
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.random_checkpoint import build_in_memory
from bench.train_throughput import make_records
from medvl.encoding import DEFAULT_SYSTEM, VLProcessor
from medvl.families import get_family
from train import memory_budget as mb
from train.adapters import apply_stage
from train.builder import sample_lengths
from train.config import StageArguments


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["bench/configs/qwen2_vl_2b.json"])
    p.add_argument("--budgets", nargs="+", type=float, default=[22, 44])
    p.add_argument("--rows", nargs="+", type=int, default=[32, 64], help="requested samples per packed row")
    p.add_argument("--n", type=int, default=384, help="bench records")
    a = p.parse_args(argv)
    print("| config | budget GiB | requested row | samples/row x accumulation | GC | loss chunk | estimated peak GiB "
          "| reason |")
    print("|---|---|---|---|---|---|---|---|")
    for cfg in a.configs:
        model, tok, improc = build_in_memory(cfg, "bfloat16", device="meta")
        family = get_family(model.config)
        processor = VLProcessor(tok, improc, family, max_len=4096, system_prompt=DEFAULT_SYSTEM)
        tokens, labelled = sample_lengths(make_records(tok, a.n, Path(tempfile.mkdtemp())), processor)
        # the bench's LoRA (r16, alpha 32 on the LLM's attention + MLP): its fp32 weights, grads and Adam states
        model = apply_stage(model, family, StageArguments(stage=2, lora_r=16, lora_alpha=32).apply_preset())
        static, dims = mb.static_bytes(model), mb.text_dims(model)
        for budget in a.budgets:
            for req in a.rows:
                try:
                    q = mb.plan(int(budget * mb.GIB), static, tokens, req, 1, dims, labelled=labelled,
                                shuffled=True)  # the bench's (and a default run's) random order
                    print(f"| {Path(cfg).stem} | {budget:g} | {req} | {q.samples_per_row} x {q.gradient_accumulation_steps} "
                          f"| {'on' if q.gradient_checkpointing else 'off'} | {q.loss_chunk} | "
                          f"{q.estimated_peak_bytes / mb.GIB:.1f} | {q.reason} |")
                except mb.BudgetTooSmall as e:
                    print(f"| {Path(cfg).stem} | {budget:g} | {req} | — | | | | {e} |")


if __name__ == "__main__":
    main()
