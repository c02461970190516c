#!/usr/bin/env bash
# Two-stage LoRA fine-tuning on one GPU (or the CPU). Variables: python -m train.pipeline --help.
#   MODEL=Qwen/Qwen2-VL-2B-Instruct STAGE1_DATA=captions.json TRAIN_DATA=train.json EVAL_DATA=val.json \
#     OUTPUT_DIR=outputs/qwen2vl bash scripts/finetune_lora_single_gpu.sh
exec bash "$(dirname "$0")/two_stage.sh" --num_gpus 1 "$@"
