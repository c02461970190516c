#!/usr/bin/env bash
# Issue 8 on a 2-GPU machine: the user's own launcher (scripts/finetune_lora_mult_gpu.sh) on the Qwen2-VL-2B
# architecture (random weights) with synthetic 448 px data. ZeRO-2: both stages; ZeRO-3: Stage 2 on the same merged
# Stage-1 model; 1 GPU: Stage 2 without DeepSpeed, same per-GPU micro-batch, for the scaling ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/mgpu_out}; mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 -m bench.random_checkpoint --config bench/configs/qwen2_vl_2b.json --out /tmp/q2b --device cuda | tail -1
python3 -m data_process.synth --out /tmp/syn --n_train 256 --n_val 16 --n_test 8 --size 448 >/dev/null
COMMON="--per_device_train_batch_size 8 --per_device_eval_batch_size 8 --gradient_checkpointing --logging_steps 5 --save_strategy no --disable_tqdm true --dataloader_num_workers 4 --gen_eval_samples 16 --gen_max_new_tokens 8"
run() { local tag=$1; shift; local t0=$(date +%s); env "$@" bash scripts/finetune_lora_mult_gpu.sh > "$OUT/$tag.log" 2>&1 || { tail -40 "$OUT/$tag.log"; exit 1; }; echo "$tag done in $(( $(date +%s) - t0 )) s"; }
RUNS=${RUNS:-zero2 zero3 gpu1}   # RUNS=gpu1 on a 1-GPU machine gives the baseline alone
want() { [[ " $RUNS " == *" $1 "* ]]; }
want zero2 && run zero2 NUM_GPUS=2 ZERO=2 MODEL=/tmp/q2b STAGE1_DATA=/tmp/syn/stage1_captions.json TRAIN_DATA=/tmp/syn/train.json \
  EVAL_DATA=/tmp/syn/val.json EVAL_STEPS=30 OUTPUT_DIR=/tmp/r_z2 COMMON_ARGS="$COMMON" STAGE1_ARGS="--max_steps 15" STAGE2_ARGS="--max_steps 30"
want zero3 && run zero3 NUM_GPUS=2 ZERO=3 SKIP_STAGE1=1 MODEL=/tmp/r_z2/stage1_merged TRAIN_DATA=/tmp/syn/train.json \
  EVAL_DATA=/tmp/syn/val.json EVAL_STEPS=30 OUTPUT_DIR=/tmp/r_z3 COMMON_ARGS="$COMMON" STAGE2_ARGS="--max_steps 30"
M1=/tmp/r_z2/stage1_merged; [ -d "$M1" ] || M1=/tmp/q2b   # same architecture: same speed
want gpu1 && run gpu1 NUM_GPUS=1 ZERO=none SKIP_STAGE1=1 MODEL=$M1 TRAIN_DATA=/tmp/syn/train.json \
  EVAL_DATA=/tmp/syn/val.json EVAL_STEPS=30 OUTPUT_DIR=/tmp/r_g1 COMMON_ARGS="$COMMON" STAGE2_ARGS="--max_steps 30"
python3 - "$OUT" <<'PY'
import json, sys
rows = []
for tag, d in [("1 GPU, no ZeRO", "/tmp/r_g1/stage2"), ("2 GPUs, ZeRO-2", "/tmp/r_z2/stage2"), ("2 GPUs, ZeRO-3", "/tmp/r_z3/stage2"),
               ("2 GPUs, ZeRO-2 (stage 1)", "/tmp/r_z2/stage1")]:
    try:
        s = json.load(open(f"{d}/run_summary.json"))
    except FileNotFoundError:
        continue
    rows.append({"run": tag, "world": s["world_size"], "samples_per_s": s["train_metrics"]["train_samples_per_second"],
                 "peak_gib_rank0": s["peak_gpu_memory_gib"], "lrs": s["optimizer_lrs"]["actual"],
                 "eval": {k: v for k, v in s["final_eval"].items() if k in ("eval_loss", "eval_closed_accuracy")}})
json.dump(rows, open(sys.argv[1] + "/multi_gpu.json", "w"), indent=2)
base = next((r["samples_per_s"] for r in rows if r["world"] == 1), float("nan"))
print("| run | GPUs | samples/s | per GPU | efficiency vs 1 GPU | peak GiB rank 0 |")
print("|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['run']} | {r['world']} | {r['samples_per_s']:.2f} | {r['samples_per_s']/r['world']:.2f} | "
          f"{r['samples_per_s']/r['world']/base:.0%} | {r['peak_gib_rank0']:.1f} |")
PY
