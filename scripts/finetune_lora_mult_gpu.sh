#!/usr/bin/env bash
# Two-stage LoRA fine-tuning on several GPUs with DeepSpeed ZeRO (2 by default; ZERO=3 or 3_offload for big models).
#   NUM_GPUS=4 ZERO=2 MODEL=Qwen/Qwen2-VL-7B-Instruct STAGE1_DATA=captions.json TRAIN_DATA=train.json \
#     EVAL_DATA=val.json OUTPUT_DIR=outputs/qwen2vl7b bash scripts/finetune_lora_mult_gpu.sh
# NUM_GPUS defaults to every GPU here; without GPUs, 2 processes on the CPU over gloo (how CI tests the wiring).
# Several nodes (OUTPUT_DIR on a shared filesystem), torchrun: the same command on each node, NODE_RANK=0..NNODES-1
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=29511 NUM_GPUS=8 MODEL=... bash scripts/finetune_lora_mult_gpu.sh
#   (RDZV=c10d: c10d rendezvous at MASTER_ADDR:MASTER_PORT, node ranks assigned on arrival)
# or DeepSpeed's launcher, on node 0 only (reaches the others over ssh/pdsh):
#   HOSTFILE=hostfile MASTER_ADDR=10.0.0.1 MODEL=... bash scripts/finetune_lora_mult_gpu.sh
exec bash "$(dirname "$0")/two_stage.sh" --num_gpus auto "$@"
