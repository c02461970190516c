#!/usr/bin/env bash
# Curriculum ablation on the demo's synthetic data and tiny Qwen2-VL (CPU, a few minutes):
#   one Stage 1 + verified merge, then three Stage-2 runs with the same steps, batch, LR and seed:
#     closed_only        the closed-ended records only (the usual recipe the curriculum is compared with)
#     open_then_closed   all records, open-ended first, closed after (--curriculum open_then_closed, run scope)
#     mixed              all records, open and closed interleaved evenly (--curriculum mixed)
#   each evaluated with the eval pipeline (eval.generate, eval.perplexity, result_statistic.py) on the held-out test
#   split; closed_only is the reference of the paired tests.
# Output under ABLATION_DIR (default ablation_out/); tables -> RESULT_DIR (default ABLATION_DIR/result):
# model_comparison_tables.md/.txt (the eval pipeline's tables) and summary.md (headline rows + training runs).
# SEEDS="0 1 2" runs every variant once per seed (model names get a _s<seed> suffix); default: one seed, 0.
# STAGE2_STEPS (default 750, as in the demo) sets the steps of every variant; STAGE1_STEPS (default 300) Stage 1's.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
D=${ABLATION_DIR:-ablation_out}
PY=${PYTHON:-python3}
STEPS=${STAGE2_STEPS:-750}
R=${RESULT_DIR:-$D/result}
SEEDS=${SEEDS:-0}
mkdir -p "$D"
t0=$(date +%s)

echo "== data, tiny model, Stage 1 (as in scripts/demo.sh)"
if [ ! -f "$D/data/train.clean.json" ]; then
  "$PY" -m data_process.synth --out "$D/data" --n_train 300 --n_val 30 --n_test 60 --seed 0 >/dev/null
  "$PY" -m data_process.data_trans --inputs "$D/data/test.json" --out_dir "$D/eval_data" --split test
  "$PY" -m train.tiny_model --family qwen2_vl --out "$D/base" --hidden 128 --layers 2
  "$PY" -m data_process.validate --model "$D/base" --data "$D/data/train.json" --out "$D/data/train.clean.json"
fi
"$PY" -m train.curriculum --data "$D/data/train.clean.json" --keep answer_type=closed --out "$D/data/train.closed.json"

COMMON="--per_device_train_batch_size 8 --lr_scheduler_type cosine --logging_steps 50 --save_strategy no --disable_tqdm true"
if [ ! -f "$D/run/stage1/STAGE_DONE" ]; then
  "$PY" -m train.finetune --stage 1 --model_name_or_path "$D/base" --train_data "$D/data/stage1_captions.json" \
    --output_dir "$D/run/stage1" --use_cpu --report_to tensorboard --resume --max_steps "${STAGE1_STEPS:-300}" --merger_lr 2e-3 --seed 0 \
    $COMMON > "$D/run_stage1.log" 2>&1 || { tail -30 "$D/run_stage1.log"; exit 1; }
fi
[ -f "$D/run/stage1_merged/merge_report.json" ] || \
  "$PY" -m train.merge_lora --base "$D/base" --adapter "$D/run/stage1" --out "$D/run/stage1_merged" --probe_data "$D/data/val.json"

models=(); runs=()
for seed in $SEEDS; do
  for variant in closed_only open_then_closed mixed; do
    out=$D/run/${variant}_s$seed
    if [ "$variant" = closed_only ]; then data=$D/data/train.closed.json; cur=none; else data=$D/data/train.clean.json; cur=$variant; fi
    echo "== Stage 2: $variant (seed $seed, $STEPS steps)"
    if [ ! -f "$out/STAGE_DONE" ]; then
      "$PY" -m train.finetune --stage 2 --model_name_or_path "$D/run/stage1_merged" --train_data "$data" \
        --output_dir "$out" --use_cpu --report_to tensorboard --resume --max_steps "$STEPS" --llm_lr 2e-3 \
        --curriculum "$cur" --seed "$seed" $COMMON > "$out.log" 2>&1 || { tail -30 "$out.log"; exit 1; }
    fi
    name=$variant; [ "$SEEDS" != 0 ] && name=${variant}_s$seed
    models+=("$name=$D/run/stage1_merged+$out"); runs+=("$out")
  done
done

echo "== evaluation (generate, perplexity, tables)"
BERT=$("$PY" -c "from medvl.metrics.bertscore import default_local_bertscore_model as f; print(f())")
MODELS="${models[*]}" TEST_DATA=$D/eval_data/test.json TYPE_MAPPING=$D/eval_data/type_mapping.json \
RESULT_DIR=$R BATCH_SIZE=16 MAX_NEW_TOKENS=24 BERTSCORE_MODEL=$BERT STAT_ARGS="--no_plots" \
  bash scripts/run_eval.sh

"$PY" -m bench.curriculum_summary --result "$R" --runs "${runs[@]}" --out "$R/summary.md"

echo
echo "Ablation finished in $(( $(date +%s) - t0 )) s. Tables: $R/model_comparison_tables.md, $R/summary.md"
