#!/usr/bin/env bash
# The GPU measurements of issues 21 and 22, in parts that each fit one device call (<= 10 min on one H200).
# Run from the repo root on the GPU machine, wheels of trl, datasets, liger-kernel, nltk, rouge_score carried in .whl/:
#   bash bench/gpu_session.sh PART OUTDIR     PART: first | levers | grpo_eval | caps | big | qwen3_eval | unsloth
# unsloth also needs .whl_unsloth/ (bash scripts/unsloth_wheels.sh; carry both .whl and .whl_unsloth): its own
# package set (trl 1.15) in /tmp/site_unsloth, first on the PYTHONPATH of the Unsloth children only.
# Each command's JSON lands in OUTDIR; the tables print at the end of each command's output.
set -u
part=$1; out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
tt() { timeout "$1" python -m bench.train_throughput --stage 2 --n 384 --steps 8 --warmup 2 "${@:2}"; }
grpo() { timeout "$1" python -m bench.grpo_throughput --config bench/configs/qwen2_vl_2b.json --steps 8 --warmup 2 \
    --out "$out/grpo_2b.json"; }
case $part in
  levers)  # the product path, each lever alone and both, against the fastest peer
    # 48-sample rows without GC need ~90 GiB: only on a card that holds them (H200), not on an 80 GB H100
    big_row=$(python3 -c "import torch; print('b_fast@48' if torch.cuda.get_device_properties(0).total_memory > 100 * 2**30 else '')")
    tt 540 --config bench/configs/qwen2_vl_2b.json --variants trl_liger_nogc b@32 b_keep@32 b_liger@32 b_fast@32 $big_row \
        --out "$out/levers_2b.json" ;;
  first)  # when one call may be all a session gets: Stage 3's cost (issue 22), then the two levers together vs the peer
    grpo 220
    tt 330 --config bench/configs/qwen2_vl_2b.json --variants trl_liger_nogc b_fast@32 b@32 --out "$out/levers_2b.json" ;;
  grpo_eval)
    grpo 240
    timeout 280 python -m bench.eval_throughput --config bench/configs/qwen2_vl_2b.json --n 128 --n_a 16 \
        --new_tokens 8 --batch_size 64 --hf_batch_size 64 --num_workers 12 --repeats 3 --repeats_a 1 \
        --vision varlen varlen+liger --out "$out/eval_2b_liger.json" ;;
  caps)
    tt 300 --config bench/configs/qwen2_vl_2b.json --memory_cap_gib 22 \
        --variants trl_liger trl_liger_nogc b_budget@64 b_budget_fast@64 --out "$out/cap22_2b.json"
    # 44 GiB: the plan keeps GC on up to the requested row (128); b_fast@12 (GC off, ~5k-token rows) tests the
    # plan's rule that rows under 8192 tokens are not worth GC off
    tt 240 --config bench/configs/qwen2_vl_2b.json --memory_cap_gib 44 \
        --variants trl_liger_nogc b_budget_fast@128 b_fast@12 --out "$out/cap44_2b.json" ;;
  big)
    tt 280 --config bench/configs/qwen2_vl_7b.json --n 256 --steps 6 --memory_budget_gib auto \
        --variants trl_liger_nogc b_budget_fast@32 --out "$out/train_7b.json"
    tt 280 --config bench/configs/qwen2_5_vl_7b.json --n 256 --steps 6 --memory_budget_gib auto \
        --variants trl_liger_nogc b_budget_fast@32 --out "$out/train_2_5_7b.json" ;;
  qwen3_eval)
    tt 200 --config bench/configs/qwen3_vl_4b.json --n 256 --steps 6 --memory_budget_gib auto \
        --variants trl_liger_nogc b_budget_fast@32 --out "$out/train_qwen3_4b.json"
    for cfg in qwen2_5_vl_7b qwen3_vl_4b; do
      timeout 170 python -m bench.eval_throughput --config bench/configs/$cfg.json --n 128 --n_a 16 --new_tokens 8 \
          --batch_size 64 --hf_batch_size 64 --num_workers 12 --repeats 2 --repeats_a 1 --out "$out/eval_$cfg.json"
    done ;;
  unsloth)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site_unsloth .whl_unsloth/*.whl
    tt 540 --config bench/configs/qwen2_vl_2b.json --variants unsloth unsloth_nogc b@32 --unsloth_site /tmp/site_unsloth \
        --out "$out/unsloth_2b.json" ;;
  *) echo "unknown part $part"; exit 2 ;;
esac
