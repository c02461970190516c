#!/usr/bin/env bash
# The whole pipeline on a 2-core CPU in minutes, on data and a model the project makes itself:
#   synthetic medical-like data -> tiny random Qwen2-VL -> validation -> Stage 1 (merger LoRA) -> verified merge
#   -> Stage 2 (LLM LoRA, validation callback) -> eval of base / Stage 1 / Stage 2 -> tables, plots, learning check.
# No hub access needed. Output under DEMO_DIR (default demo_out/).
# CURRICULUM=open_then_closed|closed_then_open|mixed trains Stage 2 in that data order (train/curriculum.py); the
# order is recorded in DEMO_DIR/run/stage2/run_summary.json ("curriculum") and curriculum_order.json. The learning
# bar is the default recipe's: open_then_closed misses it here (closed accuracy 0.74; result/curriculum_ablation/).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
D=${DEMO_DIR:-demo_out}
PY=${PYTHON:-python3}
rm -rf "$D"; mkdir -p "$D"
t0=$(date +%s)

echo "== 1/6 synthetic data";   "$PY" -m data_process.synth --out "$D/data" --n_train 300 --n_val 30 --n_test 60 --seed 0 >/dev/null
"$PY" -m data_process.data_trans --inputs "$D/data/test.json" --out_dir "$D/eval_data" --split test
echo "== 2/6 tiny Qwen2-VL";    "$PY" -m train.tiny_model --family qwen2_vl --out "$D/base" --hidden 128 --layers 2
echo "== 3/6 validation";       "$PY" -m data_process.validate --model "$D/base" --data "$D/data/train.json" --out "$D/data/train.clean.json"

echo "== 4/6 Stage 1 -> merge -> Stage 2"
MODEL=$D/base STAGE1_DATA=$D/data/stage1_captions.json TRAIN_DATA=$D/data/train.clean.json EVAL_DATA=$D/data/val.json \
OUTPUT_DIR=$D/run EVAL_STEPS=300 \
COMMON_ARGS="--per_device_train_batch_size 8 --per_device_eval_batch_size 16 --lr_scheduler_type cosine --logging_steps 20 --save_strategy no --disable_tqdm true --seed 0" \
STAGE1_ARGS="--max_steps 300 --merger_lr 2e-3" \
STAGE2_ARGS="--max_steps 750 --llm_lr 2e-3 --gen_eval_samples 60 --gen_max_new_tokens 8 --curriculum ${CURRICULUM:-none}" \
  bash scripts/finetune_lora_single_gpu.sh

echo "== 5/6 evaluation of base / Stage 1 / Stage 2"
BERT=$("$PY" -c "from medvl.metrics.bertscore import default_local_bertscore_model as f; print(f())")
MODELS="base=$D/base stage1=$D/base+$D/run/stage1 stage2=$D/base+$D/run/stage1+$D/run/stage2" \
TEST_DATA=$D/eval_data/test.json TYPE_MAPPING=$D/eval_data/type_mapping.json RESULT_DIR=$D/result \
BATCH_SIZE=16 MAX_NEW_TOKENS=24 BERTSCORE_MODEL=$BERT \
  bash scripts/run_eval.sh

echo "== 6/6 learning check"
"$PY" - "$D/result/evaluation_metrics.json" <<'PYEOF'
import json, sys
from eval.summary import closed_accuracy_of
res = json.load(open(sys.argv[1]))
base, s2 = closed_accuracy_of(res, "base"), closed_accuracy_of(res, "stage2")
print(f"closed-ended accuracy on the held-out synthetic test split: base {base:.3f} -> stage 2 {s2:.3f}")
ok = s2 >= 0.8 and s2 - base >= 0.3
print("learning bar (stage 2 >= 0.80 and >= base + 0.30):", "PASSED" if ok else "FAILED")
sys.exit(0 if ok else 1)
PYEOF
echo
echo "Demo finished in $(( $(date +%s) - t0 )) s."
echo "Tables      : $D/result/model_comparison_tables.md (.txt), all numbers: $D/result/evaluation_metrics.json"
echo "Plots       : $D/result/plots/*.png"
echo "Report      : $D/result/report.html (one self-contained page: tables, curves, gallery with boxes)"
echo "TensorBoard : tensorboard --logdir $D/run"
