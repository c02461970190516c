#!/usr/bin/env bash
# Curriculum ablation on the demo's data and tiny model (bench/curriculum_ablation.py; --help lists ABLATION_DIR,
# RESULT_DIR, SEEDS, STAGE1_STEPS, STAGE2_STEPS). Paths resolve against the directory you run it from.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} exec "${PYTHON:-python3}" -m bench.curriculum_ablation "$@"
