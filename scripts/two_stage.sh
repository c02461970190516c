#!/usr/bin/env bash
# Stage 1 -> verified merge -> Stage 2 (train/pipeline.py; `python -m train.pipeline --help` lists the variables:
# MODEL, STAGE1_DATA, TRAIN_DATA, EVAL_DATA, OUTPUT_DIR, NUM_GPUS, ZERO, COMMON_ARGS, STAGE1_ARGS, STAGE2_ARGS, ...).
# Paths resolve against the directory you run it from.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} exec "${PYTHON:-python3}" -m train.pipeline "$@"
