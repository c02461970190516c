#!/usr/bin/env bash
# Stage 1 -> verified merge -> Stage 2, shared by finetune_lora_single_gpu.sh and finetune_lora_mult_gpu.sh.
# A stage whose output holds STAGE_DONE is skipped, so rerunning the same command resumes where it stopped
# (a stage cut mid-way resumes from its last checkpoint through --resume). Each stage records what it is made from
# in <stage>/stage_args.txt (its arguments, sha256 of the files and base checkpoints they name); a rerun whose
# arguments, data or base differ is refused, since skipping or resuming would mix them. REDO_CHANGED=1 moves the
# changed stage (and what was made from it) aside to <stage>.replaced-<time> and trains it again.
#
# Environment (all optional except MODEL, STAGE1_DATA, TRAIN_DATA):
#   MODEL          base checkpoint dir or hub id            STAGE1_DATA  caption/alignment records (Stage 1)
#   TRAIN_DATA     instruction records (Stage 2)            EVAL_DATA    validation records (eval loss + generation metrics)
#   OUTPUT_DIR     default outputs/run                      NUM_GPUS     default 1 (processes per node)
#   ZERO           none | 2 | 3 | 3_offload (default none for 1 GPU, 2 for several)
#   STAGE1_ARGS / STAGE2_ARGS / COMMON_ARGS  extra arguments for python -m train.finetune
#   SKIP_STAGE1=1  Stage 2 straight on MODEL (e.g. a model already aligned)
#   SPEED_ARGS     GPU speed options, default "--packing --chunked_loss" (not with ZeRO-3); NUM_WORKERS default 8
# Several nodes, torchrun: run the same command on every node with
#   NNODES  node count    NODE_RANK  0..NNODES-1    MASTER_ADDR / MASTER_PORT  node 0's address (default 127.0.0.1:29511)
#   RDZV=c10d  dynamic rendezvous at MASTER_ADDR:MASTER_PORT (torch assigns ranks on arrival; RDZV_ID names the job;
#              still give each node its NODE_RANK: node 0 is the one that merges Stage 1)
# Several nodes, DeepSpeed launcher: run on node 0 only; it starts every host of the hostfile over ssh/pdsh
#   HOSTFILE  lines "hostname slots=GPUS"
#   DS_NO_SSH=1  no ssh between nodes: run the same command on every node with its NODE_RANK (DeepSpeed --no_ssh)
# Several nodes need OUTPUT_DIR (and the data) on a filesystem every node sees: node 0 merges Stage 1, others wait.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MODEL:?set MODEL (checkpoint dir or hub id)}"
: "${TRAIN_DATA:?set TRAIN_DATA (Stage-2 records)}"
OUTPUT_DIR=${OUTPUT_DIR:-outputs/run}
NUM_GPUS=${NUM_GPUS:-1}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29511}
WORLD=$(( NUM_GPUS * NNODES ))
if [ -n "${HOSTFILE:-}" ]; then
  WORLD=0; for n in $(grep -o 'slots=[0-9]*' "$HOSTFILE" | cut -d= -f2); do WORLD=$(( WORLD + n )); done
  [ -n "${DS_NO_SSH:-}" ] || NODE_RANK=0  # with ssh the DeepSpeed launcher runs on node 0 only
fi
ZERO=${ZERO:-$([ "$WORLD" -gt 1 ] && echo 2 || echo none)}
PY=${PYTHON:-python3}

launch=("$PY" -m train.finetune)
[ "$NUM_GPUS" -eq 1 ] && export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}  # no DataParallel
if [ -n "${HOSTFILE:-}" ]; then
  [ "$ZERO" != none ] || { echo "HOSTFILE runs through DeepSpeed: set ZERO=2 or 3" >&2; exit 1; }
  launch=("$PY" -m deepspeed.launcher.runner --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR"
          --master_port "$MASTER_PORT" ${DS_NO_SSH:+--no_ssh --node_rank "$NODE_RANK"} --module train.finetune)
elif [ "$WORLD" -gt 1 ]; then
  rdzv=(--nnodes "$NNODES" --node_rank "$NODE_RANK" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT")
  [ "${RDZV:-static}" = c10d ] && rdzv=(--nnodes "$NNODES" --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT"
                                         --rdzv_id "${RDZV_ID:-medvl}")
  launch=("$PY" -m torch.distributed.run --nproc_per_node "$NUM_GPUS" "${rdzv[@]}" -m train.finetune)
fi
dist_args=()
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  dist_args+=(--use_cpu)                        # CPU: processes talk over gloo
  [ "$WORLD" -gt 1 ] && dist_args+=(--ddp_backend gloo)
else
  dist_args+=(--bf16 --dataloader_num_workers "${NUM_WORKERS:-8}")
  # Exact speed-ups (bench/RESULTS.md): padding-free packing + labelled-only chunked loss. Not under ZeRO-3, where the
  # chunked loss would run the partitioned LM head outside the engine. SPEED_ARGS="" turns them off; add
  # --vision_cache to STAGE2_ARGS for multi-epoch Stage 2 (not Qwen3-VL).
  [ "$ZERO" = 3 ] || [ "$ZERO" = 3_offload ] || dist_args+=(${SPEED_ARGS---packing --chunked_loss})
fi
[ "$ZERO" != none ] && dist_args+=(--deepspeed "ds_configs/zero${ZERO}.json")
eval_args=()
[ -n "${EVAL_DATA:-}" ] && eval_args+=(--eval_data "$EVAL_DATA" --eval_strategy steps --eval_steps "${EVAL_STEPS:-200}")

stage_record() {  # out args...: what a stage is made from, one item a line: its arguments, then the content of
  local out=$1 f g line=""; shift  # the files and checkpoints they name (its own output dir aside)
  for f in "$@"; do  # an option and its values on one line
    if [[ $f == --* ]] && [ -n "$line" ]; then echo "$line"; line=$f; else line="${line:+$line }$f"; fi
  done
  [ -n "$line" ] && echo "$line"
  for f in "$@"; do
    [ "$f" = "$out" ] && continue
    [ -f "$f" ] && echo "sha256 $(sha256sum < "$f" | cut -d' ' -f1) $f"
    [ -d "$f" ] || continue
    for g in config.json merge_report.json stage_args.txt; do  # a base checkpoint, a merged or an earlier stage
      [ -f "$f/$g" ] && echo "sha256 $(sha256sum < "$f/$g" | cut -d' ' -f1) $f/$g"
    done
    for g in "$f"/*.safetensors; do  # weights by size and time (a re-merge or retrain rewrites them)
      [ -f "$g" ] && echo "weights $(stat -c '%s %Y' "$g") $g"
    done
  done
  return 0
}

move_aside() {  # dir: keep an output made with other arguments, out of the way
  [ -e "$1" ] || return 0
  local aside; aside="$1.replaced-$(date +%Y%m%d-%H%M%S)"
  mv "$1" "$aside" && echo "moved $1 aside to $aside"
}

run_stage() {  # stage model data out extra...
  local stage=$1 model=$2 data=$3 out=$4; shift 4
  local args=(--stage "$stage" --model_name_or_path "$model" --train_data "$data" --output_dir "$out"
              --report_to tensorboard --resume "${dist_args[@]}" ${COMMON_ARGS:-} "$@")
  local want had
  want=$(stage_record "$out" "${args[@]}")
  if [ -f "$out/stage_args.txt" ] || [ -f "$out/STAGE_DONE" ]; then
    had=$(cat "$out/stage_args.txt" 2>/dev/null || echo "(no record: made before stage_args.txt existed)")
    if [ "$had" != "$want" ]; then
      local what
      what=$( (diff <(echo "$had") <(echo "$want") || true) | sed -n 's/^< /was: /p; s/^> /now: /p' | paste -sd';' - | sed 's/;/; /g')
      if [ -z "${REDO_CHANGED:-}" ] || [ "$NNODES" -gt 1 ]; then
        echo "stage $stage in $out was made with other arguments ($what): REDO_CHANGED=1 moves it aside and" \
             "trains it again (one node only: with several, move it yourself), or use another OUTPUT_DIR" >&2
        exit 1
      fi
      move_aside "$out"
      [ "$stage" = 1 ] && move_aside "$OUTPUT_DIR/stage1_merged"  # merged from the old Stage 1
    elif [ -f "$out/STAGE_DONE" ]; then
      echo "stage $stage already done: $out"; return
    fi
  fi
  mkdir -p "$out"
  printf '%s\n' "$want" > "$out/stage_args.txt.$NODE_RANK.$$" && mv "$out/stage_args.txt.$NODE_RANK.$$" "$out/stage_args.txt"
  "${launch[@]}" "${args[@]}"
}

stage2_base=$MODEL
if [ -z "${SKIP_STAGE1:-}" ]; then
  : "${STAGE1_DATA:?set STAGE1_DATA (caption records) or SKIP_STAGE1=1}"
  run_stage 1 "$MODEL" "$STAGE1_DATA" "$OUTPUT_DIR/stage1" ${STAGE1_ARGS:-}
  stage2_base=$OUTPUT_DIR/stage1_merged
  if [ ! -f "$OUTPUT_DIR/stage1/adapter_config.json" ]; then
    stage2_base=$OUTPUT_DIR/stage1   # Stage 1 trained weights in full: its output is a checkpoint, nothing to merge
  elif [ ! -f "$stage2_base/merge_report.json" ] && [ "$NODE_RANK" -ne 0 ]; then
    echo "node $NODE_RANK: waiting for node 0 to merge Stage 1 into $stage2_base"
    for _ in $(seq "${MERGE_WAIT_S:-7200}"); do [ -f "$stage2_base/merge_report.json" ] && break; sleep 1; done
    [ -f "$stage2_base/merge_report.json" ] || { echo "no $stage2_base/merge_report.json: is OUTPUT_DIR shared?" >&2; exit 1; }
  elif [ ! -f "$stage2_base/merge_report.json" ]; then
    "$PY" -m train.merge_lora --base "$MODEL" --adapter "$OUTPUT_DIR/stage1" --out "$stage2_base" \
      ${EVAL_DATA:+--probe_data "$EVAL_DATA"}
  fi
fi
run_stage 2 "$stage2_base" "$TRAIN_DATA" "$OUTPUT_DIR/stage2" "${eval_args[@]}" ${STAGE2_ARGS:-}

echo
echo "Stage-1 adapter : ${SKIP_STAGE1:+(skipped)}${SKIP_STAGE1:-$OUTPUT_DIR/stage1}"
echo "Stage-1 merged  : ${SKIP_STAGE1:+(skipped)}${SKIP_STAGE1:-$OUTPUT_DIR/stage1_merged}"
echo "Stage-2 adapter : $OUTPUT_DIR/stage2   (base for it: $stage2_base)"
echo "TensorBoard     : tensorboard --logdir $OUTPUT_DIR"
echo "Evaluate        : MODELS=\"base=$MODEL stage2=$stage2_base+$OUTPUT_DIR/stage2\" TEST_DATA=... bash scripts/run_eval.sh"
