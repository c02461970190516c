#!/usr/bin/env bash
# The whole pipeline on a 2-core CPU in minutes (bench/demo.py: synthetic data, tiny Qwen2-VL, Stage 1 -> merge ->
# Stage 2, evaluation, learning check). DEMO_DIR (default demo_out/, relative to where you run it), CURRICULUM.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} exec "${PYTHON:-python3}" -m bench.demo "$@"
