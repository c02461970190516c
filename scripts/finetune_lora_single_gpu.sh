#!/usr/bin/env bash
# Two-stage LoRA fine-tuning on one GPU (or the CPU). See scripts/two_stage.sh for the variables.
#   MODEL=Qwen/Qwen2-VL-2B-Instruct STAGE1_DATA=captions.json TRAIN_DATA=train.json EVAL_DATA=val.json \
#     OUTPUT_DIR=outputs/qwen2vl bash scripts/finetune_lora_single_gpu.sh
export NUM_GPUS=1
# one process must see one GPU (several would make the Trainer use DataParallel)
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
exec bash "$(dirname "$0")/two_stage.sh" "$@"
