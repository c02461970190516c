#!/usr/bin/env bash
# Generation, perplexity, then the comparison tables, plots and report (eval/run.py; `python -m eval.run --help`
# lists the variables: MODELS, TEST_DATA, TYPE_MAPPING, RESULT_DIR, BATCH_SIZE, LIMIT, MIN_PIXELS, ...).
#   MODELS="base=Qwen/Qwen2-VL-2B-Instruct stage2=Qwen/Qwen2-VL-2B-Instruct+outputs/run/stage1+outputs/run/stage2" \
#   TEST_DATA=eval_data/test.json TYPE_MAPPING=eval_data/type_mapping.json RESULT_DIR=result bash scripts/run_eval.sh
# Paths resolve against the directory you run it from.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} exec "${PYTHON:-python3}" -m eval.run "$@"
