"""Curriculum ablation on the demo's synthetic data and tiny Qwen2-VL (CPU, a few minutes):
one Stage 1 + verified merge, then three Stage-2 runs with the same steps, batch, LR and seed:
  closed_only        the closed-ended records only (the usual recipe the curriculum is compared with)
  open_then_closed   all records, open-ended first, closed after (--curriculum open_then_closed, run scope)
  mixed              all records, open and closed interleaved evenly (--curriculum mixed)
each evaluated with the eval pipeline (eval.generate, eval.perplexity, result_statistic.py) on the held-out test split;
closed_only is the reference of the paired tests.

    python -m bench.curriculum_ablation                    # what bash scripts/curriculum_ablation.sh runs
    SEEDS="0 1 2" STAGE2_STEPS=300 python -m bench.curriculum_ablation

Output under ABLATION_DIR (default ablation_out/); tables -> RESULT_DIR (default ABLATION_DIR/result):
model_comparison_tables.md/.txt (the eval pipeline's tables) and summary.md (headline rows + training runs).
SEEDS="0 1 2" runs every variant once per seed (model names get a _s<seed> suffix); default: one seed, 0.
STAGE2_STEPS (default 750, as in the demo) sets the steps of every variant; STAGE1_STEPS (default 300) Stage 1's.
Each run goes through train/recipes/stage<N>.yaml + cpu.yaml; a finished run is reused only if its arguments and data
are the same (stage_args.txt; REDO_CHANGED=1 moves a changed one aside).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.demo import _env, call, evaluate, prepare
from train.pipeline import RECIPES
from train.stage_record import StageChanged, decide, move_aside, stage_record, write_record

COMMON = ["--per_device_train_batch_size", "8", "--lr_scheduler_type", "cosine", "--logging_steps", "50",
          "--save_strategy", "no", "--disable_tqdm", "true"]
VARIANTS = ("closed_only", "open_then_closed", "mixed")


def train(stage: int, out: Path, *flags) -> None:
    """One stage on the CPU, its log beside its output; skipped when done with the same record."""
    args = [str(RECIPES / f"stage{stage}.yaml"), str(RECIPES / "cpu.yaml"), "--output_dir", str(out),
            *map(str, flags), *COMMON]
    want = stage_record(str(out), args)
    try:
        action = decide(stage, out, want, bool(os.environ.get("REDO_CHANGED")), 1)
    except StageChanged as e:
        raise SystemExit(str(e)) from None
    if action == "skip":
        return
    if action == "redo":
        move_aside(out)
    write_record(out, want, 0)
    log = out.with_name(out.name + ".log")
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", "train.finetune", *args], env=_env(), stdout=f,
                            stderr=subprocess.STDOUT).returncode
    if rc:
        print("\n".join(log.read_text().splitlines()[-30:]))
        raise SystemExit(rc)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.curriculum_ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", "--out_dir", default=os.environ.get("ABLATION_DIR") or "ablation_out")
    a = p.parse_args(argv)
    d = Path(a.output_dir).resolve()
    result = Path(os.environ.get("RESULT_DIR") or d / "result").resolve()
    steps, seeds = os.environ.get("STAGE2_STEPS") or "750", (os.environ.get("SEEDS") or "0").split()
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    py = sys.executable

    print("== data, tiny model, Stage 1 (as in the demo)", flush=True)
    if not (d / "data/train.clean.json").is_file():
        prepare(d)
    call([py, "-m", "train.curriculum", "--data", d / "data/train.clean.json", "--keep", "answer_type=closed",
          "--out", d / "data/train.closed.json"])
    base, stage1, merged = d / "base", d / "run/stage1", d / "run/stage1_merged"
    train(1, stage1, "--model_name_or_path", base, "--train_data", d / "data/stage1_captions.json",
          "--max_steps", os.environ.get("STAGE1_STEPS") or "300", "--merger_lr", "2e-3", "--seed", "0")
    if not (merged / "merge_report.json").is_file():
        call([py, "-m", "train.merge_lora", "--model_name_or_path", base, "--adapter", stage1, "--output_dir", merged,
              "--probe_data", d / "data/val.json"])

    models, runs = [], []
    for seed in seeds:
        for variant in VARIANTS:
            out = d / f"run/{variant}_s{seed}"
            data, cur = (("train.closed.json", "none") if variant == "closed_only" else ("train.clean.json", variant))
            print(f"== Stage 2: {variant} (seed {seed}, {steps} steps)", flush=True)
            train(2, out, "--model_name_or_path", merged, "--train_data", d / "data" / data, "--max_steps", steps,
                  "--llm_lr", "2e-3", "--curriculum", cur, "--seed", seed)
            name = variant if seeds == ["0"] else f"{variant}_s{seed}"
            models.append(f"{name}={merged}+{out}")
            runs.append(str(out))

    print("== evaluation (generate, perplexity, tables)", flush=True)
    evaluate(models, d, result, STAT_ARGS="--no_plots")
    call([py, "-m", "bench.curriculum_summary", "--result", result, "--runs", *runs, "--out", result / "summary.md"])
    print(f"\nAblation finished in {time.time() - t0:.0f} s. Tables: {result}/model_comparison_tables.md, "
          f"{result}/summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
