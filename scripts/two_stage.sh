#!/usr/bin/env bash
# Stage 1 -> verified merge -> Stage 2, shared by finetune_lora_single_gpu.sh and finetune_lora_mult_gpu.sh.
# A stage whose output holds STAGE_DONE is skipped, so rerunning the same command resumes where it stopped
# (a stage cut mid-way resumes from its last checkpoint through --resume).
#
# Environment (all optional except MODEL, STAGE1_DATA, TRAIN_DATA):
#   MODEL          base checkpoint dir or hub id            STAGE1_DATA  caption/alignment records (Stage 1)
#   TRAIN_DATA     instruction records (Stage 2)            EVAL_DATA    validation records (eval loss + generation metrics)
#   OUTPUT_DIR     default outputs/run                      NUM_GPUS     default 1 (processes per node)
#   ZERO           none | 2 | 3 | 3_offload (default none for 1 GPU, 2 for several)
#   STAGE1_ARGS / STAGE2_ARGS / COMMON_ARGS  extra arguments for python -m train.finetune
#   SKIP_STAGE1=1  Stage 2 straight on MODEL (e.g. a model already aligned)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MODEL:?set MODEL (checkpoint dir or hub id)}"
: "${TRAIN_DATA:?set TRAIN_DATA (Stage-2 records)}"
OUTPUT_DIR=${OUTPUT_DIR:-outputs/run}
NUM_GPUS=${NUM_GPUS:-1}
ZERO=${ZERO:-$([ "$NUM_GPUS" -gt 1 ] && echo 2 || echo none)}
PY=${PYTHON:-python3}

launch=("$PY" -m train.finetune)
[ "$NUM_GPUS" -eq 1 ] && export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}  # no DataParallel
if [ "$NUM_GPUS" -gt 1 ]; then
  launch=("$PY" -m torch.distributed.run --nproc_per_node "$NUM_GPUS" --master_port "${MASTER_PORT:-29511}" -m train.finetune)
fi
dist_args=()
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  dist_args+=(--use_cpu)                        # CPU: processes talk over gloo
  [ "$NUM_GPUS" -gt 1 ] && dist_args+=(--ddp_backend gloo)
else
  dist_args+=(--bf16)
fi
[ "$ZERO" != none ] && dist_args+=(--deepspeed "ds_configs/zero${ZERO}.json")
eval_args=()
[ -n "${EVAL_DATA:-}" ] && eval_args+=(--eval_data "$EVAL_DATA" --eval_strategy steps --eval_steps "${EVAL_STEPS:-200}")

run_stage() {  # stage model data out extra...
  local stage=$1 model=$2 data=$3 out=$4; shift 4
  if [ -f "$out/STAGE_DONE" ]; then echo "stage $stage already done: $out"; return; fi
  "${launch[@]}" --stage "$stage" --model_name_or_path "$model" --train_data "$data" --output_dir "$out" \
    --report_to tensorboard --resume "${dist_args[@]}" ${COMMON_ARGS:-} "$@"
}

stage2_base=$MODEL
if [ -z "${SKIP_STAGE1:-}" ]; then
  : "${STAGE1_DATA:?set STAGE1_DATA (caption records) or SKIP_STAGE1=1}"
  run_stage 1 "$MODEL" "$STAGE1_DATA" "$OUTPUT_DIR/stage1" ${STAGE1_ARGS:-}
  if [ ! -f "$OUTPUT_DIR/stage1_merged/merge_report.json" ]; then
    "$PY" -m train.merge_lora --base "$MODEL" --adapter "$OUTPUT_DIR/stage1" --out "$OUTPUT_DIR/stage1_merged" \
      ${EVAL_DATA:+--probe_data "$EVAL_DATA"}
  fi
  stage2_base=$OUTPUT_DIR/stage1_merged
fi
run_stage 2 "$stage2_base" "$TRAIN_DATA" "$OUTPUT_DIR/stage2" "${eval_args[@]}" ${STAGE2_ARGS:-}

echo
echo "Stage-1 adapter : ${SKIP_STAGE1:+(skipped)}${SKIP_STAGE1:-$OUTPUT_DIR/stage1}"
echo "Stage-1 merged  : ${SKIP_STAGE1:+(skipped)}${SKIP_STAGE1:-$OUTPUT_DIR/stage1_merged}"
echo "Stage-2 adapter : $OUTPUT_DIR/stage2   (base for it: $stage2_base)"
echo "TensorBoard     : tensorboard --logdir $OUTPUT_DIR"
echo "Evaluate        : MODELS=\"base=$MODEL stage2=$stage2_base+$OUTPUT_DIR/stage2\" TEST_DATA=... bash scripts/run_eval.sh"
