"""The whole pipeline on a 2-core CPU in minutes, on data and a model the project makes itself:
synthetic medical-like data -> tiny random Qwen2-VL -> validation -> Stage 1 (merger LoRA) -> verified merge
-> Stage 2 (LLM LoRA, validation callback) -> eval of base / Stage 1 / Stage 2 -> tables, plots, learning check.
No hub access needed.

    python -m bench.demo                                   # what bash scripts/demo.sh runs
    DEMO_DIR=/tmp/demo CURRICULUM=mixed python -m bench.demo

Output under --output_dir (DEMO_DIR, default demo_out/; removed first). --curriculum (CURRICULUM)
open_then_closed|closed_then_open|mixed trains Stage 2 in that data order (train/curriculum.py); the order is recorded
in <dir>/run/stage2/run_summary.json ("curriculum") and curriculum_order.json. The learning bar is the default
recipe's: open_then_closed misses it here (closed accuracy 0.74; result/curriculum_ablation/). STAGE3=1 (--stage3)
adds Stage 3 (GRPO on TRL, train/grpo.py) on the merged Stage 2 and evaluates it as `stage3`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from eval.summary import closed_accuracy_of
from medvl.metrics.bertscore import default_local_bertscore_model
from train.pipeline import REPO, run_pipeline

BAR_ACCURACY, BAR_GAIN = 0.8, 0.3  # closed-ended accuracy of Stage 2, and its gain over the base


def _env(**extra) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return env


_T0 = time.time()  # the demo is one process: its start


def _step(title: str) -> None:
    """A step's header with the seconds since the demo started (where a slow machine spends them)."""
    print(f"== {title}  [{time.time() - _T0:.0f} s]", flush=True)


def call(cmd: list, quiet: bool = False, **env) -> None:
    """One step as its own process (each CLI exactly as a user runs it); a failure ends the demo with its status."""
    rc = subprocess.run([str(c) for c in cmd], env=_env(**env),
                        stdout=subprocess.DEVNULL if quiet else None).returncode
    if rc:
        raise SystemExit(rc)


def prepare(d: Path) -> None:
    """Synthetic data (train/val/test, Stage-1 captions), the eval set, the tiny base, the validated train split."""
    py = sys.executable
    call([py, "-m", "data_process.synth", "--out", d / "data", "--n_train", 300, "--n_val", 30, "--n_test", 60,
          "--seed", 0], quiet=True)
    call([py, "-m", "data_process.data_trans", "--inputs", d / "data/test.json", "--out_dir", d / "eval_data",
          "--split", "test"])
    _step("2/6 tiny Qwen2-VL")
    call([py, "-m", "train.tiny_model", "--family", "qwen2_vl", "--output_dir", d / "base", "--hidden", 128,
          "--layers", 2])
    _step("3/6 validation")
    call([py, "-m", "data_process.validate", "--model", d / "base", "--data", d / "data/train.json",
          "--out", d / "data/train.clean.json"])


def evaluate(models: list[str], d: Path, result: Path, **extra) -> None:
    """The eval pipeline (scripts/run_eval.sh: generation, perplexity, tables, plots, report) on the test split."""
    call(["bash", REPO / "scripts/run_eval.sh"], MODELS=" ".join(models), TEST_DATA=str(d / "eval_data/test.json"),
         TYPE_MAPPING=str(d / "eval_data/type_mapping.json"), RESULT_DIR=str(result), BATCH_SIZE="16",
         MAX_NEW_TOKENS="24", BERTSCORE_MODEL=str(default_local_bertscore_model()), **extra)


def learning_check(metrics_json: Path) -> bool:
    res = json.loads(metrics_json.read_text())
    base, s2 = closed_accuracy_of(res, "base"), closed_accuracy_of(res, "stage2")
    print(f"closed-ended accuracy on the held-out synthetic test split: base {base:.3f} -> stage 2 {s2:.3f}")
    ok = s2 >= BAR_ACCURACY and s2 - base >= BAR_GAIN
    print(f"learning bar (stage 2 >= {BAR_ACCURACY:.2f} and >= base + {BAR_GAIN:.2f}):", "PASSED" if ok else "FAILED")
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", "--out_dir", default=os.environ.get("DEMO_DIR") or "demo_out",
                   help="everything lands here (removed first); default DEMO_DIR or demo_out")
    p.add_argument("--curriculum", default=os.environ.get("CURRICULUM") or "none",
                   help="Stage-2 data order: none | open_then_closed | closed_then_open | mixed")
    p.add_argument("--stage3", action="store_true", default=os.environ.get("STAGE3") == "1",
                   help="also Stage 3 (GRPO, the preset's rewards closed/open_f1/iou, 30 steps) on the merged "
                        "Stage 2, evaluated as stage3 (STAGE3=1; off by default: ~30 s more on 2 CPU cores, and 30 "
                        "steps change little here)")
    a = p.parse_args(argv)
    d = Path(a.output_dir).resolve()
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    _step("1/6 synthetic data")
    prepare(d)
    _step("4/6 Stage 1 -> merge -> Stage 2")
    run_pipeline(_env(
        MODEL=str(d / "base"), STAGE1_DATA=str(d / "data/stage1_captions.json"),
        TRAIN_DATA=str(d / "data/train.clean.json"), EVAL_DATA=str(d / "data/val.json"), OUTPUT_DIR=str(d / "run"),
        EVAL_STEPS="300",
        COMMON_ARGS="--per_device_train_batch_size 8 --per_device_eval_batch_size 16 --lr_scheduler_type cosine "
                    "--logging_steps 20 --save_strategy no --disable_tqdm true --seed 0",
        STAGE1_ARGS="--max_steps 300 --merger_lr 2e-3",
        STAGE2_ARGS=f"--max_steps 750 --llm_lr 2e-3 --gen_eval_samples 60 --gen_max_new_tokens 8 "
                    f"--curriculum {a.curriculum}",
        **({"STAGE3_DATA": str(d / "data/train.clean.json"),
            "STAGE3_ARGS": "--max_steps 30 --llm_lr 1e-3 --num_generations 4 "
                           "--max_completion_length 8 --gen_eval_samples 16"} if a.stage3 else {})), num_gpus=1)
    _step("5/6 evaluation of base / Stage 1 / Stage 2")
    base, s1, s2 = d / "base", d / "run/stage1", d / "run/stage2"
    models = [f"base={base}", f"stage1={base}+{s1}", f"stage2={base}+{s1}+{s2}"]
    if a.stage3:  # Stage 3 trained on the merged Stage 2 (train/pipeline.py)
        models.append(f"stage3={d / 'run/stage2_merged'}+{d / 'run/stage3'}")
    evaluate(models, d, d / "result")
    _step("6/6 learning check")
    if not learning_check(d / "result/evaluation_metrics.json"):
        return 1
    r = d / "result"
    print(f"\nDemo finished in {time.time() - _T0:.0f} s.")
    print(f"Tables      : {r}/model_comparison_tables.md (.txt), all numbers: {r}/evaluation_metrics.json")
    print(f"Plots       : {r}/plots/*.png")
    print(f"Report      : {r}/report.html (one self-contained page: tables, curves, gallery with boxes)")
    print(f"TensorBoard : tensorboard --logdir {d}/run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
