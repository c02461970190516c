"""bench/grpo_throughput.py --tiny: the Stage-3 product path (train.grpo.build) on the tiny model, timed per phase."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_grpo_bench_times_each_phase_and_moves_only_lora(tmp_path):
    out = tmp_path / "grpo.json"
    # 2 prompts x 4 completions in micro-batches of 4: gradient accumulation of 2 behind one generation per step;
    # weight decay moves the LoRA weights although random weights earn zero advantages (zero gradient)
    cmd = [sys.executable, "-m", "bench.grpo_throughput", "--tiny", "--steps", "2", "--warmup", "1",
           "--prompts_per_step", "2", "--num_generations", "4", "--batch", "4", "--max_completion_length", "6",
           "--weight_decay", "0.1", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(out.read_text())
    assert r["timed_steps"] == 2 and len(r["steps"]) == 3
    timed = r["steps"][1:]
    for s in timed:  # every timed step generated, scored and optimised, each phase inside the step
        assert s["generation_s"] > 0 and s["scoring_s"] > 0 and s["optimisation_s"] > 0 and s["fwd_bwd_s"] > 0
        assert s["generation_s"] + s["scoring_s"] + s["optimisation_s"] <= s["total_s"] * 1.001
        assert s["completions"] == 8
    assert r["completions_timed"] == 2 * 2 * 4 and r["completions_all"] == 3 * 2 * 4
    assert r["median_generation_s"] > 0 and r["median_optimisation_s"] > 0 and r["completions_per_s_total"] > 0
    assert 0 < r["mean_completion_length"] <= 6
    assert r["settings"]["gradient_accumulation_steps"] == 2 and r["settings"]["lora"]["r"] == 16
    assert set(r["settings"]["records"]) == {"vqa/closed", "vqa/open", "grounding/open"}
    assert set(r["versions"]) >= {"torch", "transformers", "trl", "peft"} and r["device"] == "cpu"
    # the trained adapter moved, nothing else (base weights, TRL's frozen reference adapter)
    assert r["changed_params"] > 0 and r["only_lora_changed"], r["changed_outside_lora"]
    assert proc.stdout.rstrip().splitlines()[-1].startswith("| peak GiB")
