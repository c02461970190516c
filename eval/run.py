"""The evaluation pipeline: generation, perplexity, then the tables, plots and report, from environment variables.

    MODELS='base=Qwen/Qwen2-VL-2B-Instruct stage2=Qwen/Qwen2-VL-2B-Instruct+outputs/run/stage1+outputs/run/stage2' \\
      TEST_DATA=eval_data/test.json TYPE_MAPPING=eval_data/type_mapping.json RESULT_DIR=result python -m eval.run
    python -m eval.run      # what bash scripts/run_eval.sh runs

MODELS is split like a shell line: quote an entry whose path holds a space ('base="/models/my model"'). Each step
runs `python -m eval.generate ...`, `python -m eval.perplexity ...`, `python result_statistic.py ...` (printed
first), in its own process so each frees its model; the specs go to them unchanged (eval/model_spec.py parses them).
Relative paths are the caller's: nothing changes directory.

Environment (MODELS, TEST_DATA, TYPE_MAPPING required):
  RESULT_DIR      default result (predictions under RESULT_DIR/predictions)
  BATCH_SIZE      default 64 with a GPU, else 8
  PRESET          a scoring protocol's generation convention (strict, the default | llava_med | medevalkit |
                  lmms_eval: system turn, prompt suffix, max new tokens; eval.generate --preset)
  MAX_NEW_TOKENS  default: the preset's (strict 64)
  LIMIT           first N test records only, in generation and perplexity alike (the tables then say the test set
                  is partial)
  PROMPT_MODE     default | custom (+ SYSTEM_PROMPT_FILE)
  MIN_PIXELS / MAX_PIXELS  one image budget for every model (default: each checkpoint's / adapter's saved one)
  MAX_LEN         longest prompt (default: the model's context)
  ENCODE_WORKERS  prompt-encoding processes of generation and perplexity (training's NUM_WORKERS is its dataloader
                  workers; evaluation ignores NUM_WORKERS)
  COMPILE_VISION=1  torch.compile the vision blocks      OVERWRITE=1  start this run's models afresh
  BERTSCORE_MODEL (name or local path) + BERTSCORE_LAYERS
  HTML=0          no RESULT_DIR/report.html               RUNS  training output folders for the report's curves
  GEN_ARGS / STAT_ARGS  extra flags for eval.generate / result_statistic.py
Reruns resume: ids already in predictions.jsonl are skipped; a rerun with other settings is refused (OVERWRITE=1).
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from eval.model_spec import ModelSpec

REPO = Path(__file__).resolve().parents[1]


def _need(env: Mapping[str, str], name: str, what: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SystemExit(f"error: set {name} ({what})")
    return value


def commands(env: Mapping[str, str], py: str = sys.executable) -> list[list[str]]:
    """The three commands of one evaluation, from the environment variables above."""
    specs = shlex.split(_need(env, "MODELS", "space-separated name=CHECKPOINT[+ADAPTER...] specs"))
    names = [ModelSpec.parse(s).name for s in specs]  # refuses a malformed spec before anything runs
    test = _need(env, "TEST_DATA", "test.json from data_process.data_trans")
    mapping = _need(env, "TYPE_MAPPING", "type_mapping.json from data_process.data_trans")
    result = env.get("RESULT_DIR") or "result"
    preds = str(Path(result) / "predictions")
    batch = env.get("BATCH_SIZE") or ("64" if torch.cuda.is_available() else "8")

    models = [a for s in specs for a in ("--model", s)]
    same = ["--prompt_mode", env.get("PROMPT_MODE") or "default"]  # generation and perplexity must see alike
    for var, flag in (("SYSTEM_PROMPT_FILE", "--system_prompt_file"), ("MIN_PIXELS", "--min_pixels"),
                      ("MAX_PIXELS", "--max_pixels"), ("MAX_LEN", "--max_len"), ("LIMIT", "--limit")):
        if env.get(var):
            same += [flag, env[var]]
    speed = (["--num_workers", env["ENCODE_WORKERS"]] if env.get("ENCODE_WORKERS") else []) + \
            (["--compile_vision"] if env.get("COMPILE_VISION") == "1" else [])
    generate = [py, "-m", "eval.generate", *models, "--test_data", test, "--out_dir", preds, "--batch_size", batch,
                *(["--max_new_tokens", env["MAX_NEW_TOKENS"]] if env.get("MAX_NEW_TOKENS") else []),  # else preset's
                *(["--preset", env["PRESET"]] if env.get("PRESET") else []), *same, *speed,
                *(["--overwrite"] if env.get("OVERWRITE") == "1" else []), *shlex.split(env.get("GEN_ARGS", ""))]
    perplexity = [py, "-m", "eval.perplexity", *models, "--test_data", test, "--type_mapping", mapping,
                  "--out_dir", preds, "--batch_size", batch, *same, *speed]
    stats = [py, str(REPO / "result_statistic.py"), "--pred_dir", preds, "--type_mapping", mapping,
             "--out_dir", result, "--models", *names]
    if env.get("BERTSCORE_MODEL"):
        stats += ["--bertscore_model", env["BERTSCORE_MODEL"]]
        if env.get("BERTSCORE_LAYERS"):
            stats += ["--bertscore_layers", env["BERTSCORE_LAYERS"]]
    if env.get("HTML", "1") != "0":
        stats += ["--html", "--test_data", test]
    if env.get("RUNS"):
        stats += ["--runs", *shlex.split(env["RUNS"])]
    if env.get("LIMIT"):
        stats += ["--allow_partial"]  # asked for: the tables then name the ids left out
    stats += shlex.split(env.get("STAT_ARGS", ""))
    return [generate, perplexity, stats]


def main(argv=None) -> None:
    argparse.ArgumentParser(prog="python -m eval.run", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    env = dict(os.environ)
    # the repo on the path of each step, wherever the caller stands (the steps import eval/ and medvl/)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    try:
        cmds = commands(env)
    except ValueError as e:  # a malformed spec
        raise SystemExit(f"error: {e}")
    for cmd in cmds:
        print("+ " + shlex.join(cmd), flush=True)
        rc = subprocess.run(cmd, env=env).returncode
        if rc:
            sys.exit(rc)


if __name__ == "__main__":
    main()
