#!/usr/bin/env bash
# Generate answers for each model, score perplexity, then write the comparison tables and plots.
#   MODELS="base=Qwen/Qwen2-VL-2B-Instruct stage2=Qwen/Qwen2-VL-2B-Instruct+outputs/run/stage1+outputs/run/stage2" \
#   TEST_DATA=eval_data/test.json TYPE_MAPPING=eval_data/type_mapping.json RESULT_DIR=result bash scripts/run_eval.sh
# Optional: BATCH_SIZE (64 with a GPU, else 8), MAX_NEW_TOKENS (64), PROMPT_MODE default|custom + SYSTEM_PROMPT_FILE,
#           NUM_WORKERS (encoding processes), COMPILE_VISION=1 (torch.compile the vision blocks),
#           BERTSCORE_MODEL (name or local path) + BERTSCORE_LAYERS, GEN_ARGS / STAT_ARGS (extra flags),
#           HTML=0 (skip RESULT_DIR/report.html), RUNS (training output folders for its curves; default: the adapters'),
#           MIN_PIXELS / MAX_PIXELS: one image budget for every model, base and adapters alike (default: each
#           checkpoint's / adapter's saved budget; eval.generate warns loudly when those differ between models),
#           MAX_LEN (longest prompt; default the model's context), OVERWRITE=1 (start this run's models afresh).
# Reruns resume: ids already in predictions.jsonl are skipped. A rerun with other settings (weights, budget, prompt,
# decoding) is refused instead of mixed in: OVERWRITE=1 regenerates those models from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MODELS:?set MODELS to space-separated name=CHECKPOINT[+ADAPTER...] specs}"
: "${TEST_DATA:?set TEST_DATA (test.json from data_process.data_trans)}"
: "${TYPE_MAPPING:?set TYPE_MAPPING (type_mapping.json from data_process.data_trans)}"
RESULT_DIR=${RESULT_DIR:-result}
PRED_DIR=$RESULT_DIR/predictions
PY=${PYTHON:-python3}
model_args=()
for m in $MODELS; do model_args+=(--model "$m"); done
prompt_args=(--prompt_mode "${PROMPT_MODE:-default}")
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then BATCH_SIZE=${BATCH_SIZE:-64}; fi
speed_args=()
[ -n "${NUM_WORKERS:-}" ] && speed_args+=(--num_workers "$NUM_WORKERS")
[ "${COMPILE_VISION:-0}" = 1 ] && speed_args+=(--compile_vision)
[ -n "${SYSTEM_PROMPT_FILE:-}" ] && prompt_args+=(--system_prompt_file "$SYSTEM_PROMPT_FILE")
# what both generation and perplexity must see alike: same prompt, image budget and length limit
same_args=("${prompt_args[@]}")
[ -n "${MIN_PIXELS:-}" ] && same_args+=(--min_pixels "$MIN_PIXELS")
[ -n "${MAX_PIXELS:-}" ] && same_args+=(--max_pixels "$MAX_PIXELS")
[ -n "${MAX_LEN:-}" ] && same_args+=(--max_len "$MAX_LEN")
overwrite=()
[ "${OVERWRITE:-0}" = 1 ] && overwrite+=(--overwrite)  # generation clears both outputs; perplexity then starts clean

"$PY" -m eval.generate "${model_args[@]}" --test_data "$TEST_DATA" --out_dir "$PRED_DIR" \
  --batch_size "${BATCH_SIZE:-8}" --max_new_tokens "${MAX_NEW_TOKENS:-64}" "${same_args[@]}" "${speed_args[@]}" \
  "${overwrite[@]}" ${GEN_ARGS:-}
"$PY" -m eval.perplexity "${model_args[@]}" --test_data "$TEST_DATA" --type_mapping "$TYPE_MAPPING" \
  --out_dir "$PRED_DIR" --batch_size "${BATCH_SIZE:-8}" "${same_args[@]}" "${speed_args[@]}"
stat_args=()
[ -n "${BERTSCORE_MODEL:-}" ] && stat_args+=(--bertscore_model "$BERTSCORE_MODEL" ${BERTSCORE_LAYERS:+--bertscore_layers "$BERTSCORE_LAYERS"})
[ "${HTML:-1}" != 0 ] && stat_args+=(--html --test_data "$TEST_DATA")
[ -n "${RUNS:-}" ] && stat_args+=(--runs $RUNS)
names=(); for m in $MODELS; do names+=("${m%%=*}"); done
"$PY" result_statistic.py --pred_dir "$PRED_DIR" --type_mapping "$TYPE_MAPPING" --out_dir "$RESULT_DIR" \
  --models "${names[@]}" "${stat_args[@]}" ${STAT_ARGS:-}
