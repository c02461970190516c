"""Two processes over gloo on CPU, real DeepSpeed engines: ZeRO-2 and ZeRO-3 run both stages and save adapters that reload."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _torchrun(args: list, log: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
           "-m", "train.finetune", *map(str, args)]
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=600)
    assert r.returncode == 0, log.read_text()[-4000:]


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_two_process_deepspeed_runs_both_stages(zero, tiny_models, tmp_path):
    from peft import PeftModel

    from data_process.synth import generate
    from train.loader import load_model_and_processor
    from train.merge_lora import merge

    data = generate(tmp_path / "synth", n_train=8, n_val=4, n_test=2, size=64, seed=2)
    base = tiny_models["qwen2_vl"]
    common = ["--use_cpu", "--ddp_backend", "gloo", "--deepspeed", ROOT / "ds_configs" / f"{zero}.json",
              "--per_device_train_batch_size", 2, "--max_steps", 2, "--logging_steps", 1, "--report_to", "tensorboard",
              "--save_strategy", "no", "--dataloader_num_workers", 0]
    s1 = tmp_path / "s1"
    _torchrun(["--stage", 1, "--model_name_or_path", base, "--train_data", data["stage1_captions"], "--output_dir", s1,
               "--merger_lr", 5e-4, *common], tmp_path / "s1.log")
    merge(str(base), str(s1), str(tmp_path / "s1m"))
    s2 = tmp_path / "s2"
    _torchrun(["--stage", 2, "--model_name_or_path", tmp_path / "s1m", "--train_data", data["train"],
               "--output_dir", s2, "--eval_data", data["val"], "--eval_strategy", "steps", "--eval_steps", 2, "--gen_eval_samples", 4,
               "--gen_max_new_tokens", 3, "--per_device_eval_batch_size", 2, "--llm_lr", 3e-4, *common], tmp_path / "s2.log")
    for out, group, lr in [(s1, "merger", 5e-4), (s2, "llm", 3e-4)]:
        summary = json.loads((out / "run_summary.json").read_text())
        # per-group LRs read back from the optimizer DeepSpeed steps
        assert summary["optimizer_lrs"]["actual"] == {group: lr}, summary["optimizer_lrs"]
        assert (out / "adapter_model.safetensors").stat().st_size > 0
    assert "eval_closed_accuracy" in json.loads((s2 / "run_summary.json").read_text())["final_eval"]
    # the saved adapter reloads onto its base and carries trained (non-zero) LoRA B weights
    model, _, _ = load_model_and_processor(str(tmp_path / "s1m"))
    peft_model = PeftModel.from_pretrained(model, str(s2))
    b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert b and all(p.numel() > 0 for p in b) and any(p.abs().sum() > 0 for p in b)
