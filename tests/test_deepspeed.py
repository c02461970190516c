"""Two processes over gloo on CPU, real DeepSpeed engines: ZeRO-2 and ZeRO-3 run both stages and save adapters that reload."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _torchrun(args: list, log: Path, timeout: int = 600):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
           "-m", "train.finetune", *map(str, args)]
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    assert r.returncode == 0, log.read_text()[-4000:]


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_two_process_deepspeed_runs_both_stages(zero, tiny_models, tmp_path):
    from peft import PeftModel

    from data_process.synth import generate
    from medvl.loading import load_model_and_processor
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


@pytest.mark.parametrize("zero", ["zero3"])
def test_text_only_batches_on_some_ranks_do_not_hang(zero, tiny_models, tmp_path):
    """Half the records have no image and each rank takes one per step, so ranks disagree on whether the vision tower
    runs; ZeRO-3 gathers weights collectively per module, so without the keepalive sample this run hangs (gloo:
    "collective mismatch"). The same run then saves, resumes and merges under ZeRO-3."""
    from medvl.jsonio import read_records, write_json
    from data_process.synth import generate

    data = generate(tmp_path / "synth", n_train=8, n_val=2, n_test=2, size=64, seed=4)
    recs = read_records(data["train"])
    for r in recs[1::2]:
        r.pop("image")
        r["conversations"][0]["value"] = r["conversations"][0]["value"].replace("<image>", "").strip()
    write_json(tmp_path / "mixed.json", recs)
    # Tiny weights would fall under ZeRO-3's persistence threshold (kept whole, never gathered): partition them all.
    cfg = json.loads((ROOT / "ds_configs" / f"{zero}.json").read_text())
    cfg["zero_optimization"].update(stage3_param_persistence_threshold=0, stage3_prefetch_bucket_size=0)
    (tmp_path / "ds.json").write_text(json.dumps(cfg))
    out = tmp_path / "s2"
    args = ["--stage", 2, "--model_name_or_path", tiny_models["qwen2_vl"], "--train_data", tmp_path / "mixed.json",
            "--output_dir", out, "--use_cpu", "--ddp_backend", "gloo", "--deepspeed", tmp_path / "ds.json",
            "--per_device_train_batch_size", 1, "--logging_steps", 1, "--report_to", "none", "--save_strategy",
            "steps", "--save_steps", 8, "--dataloader_num_workers", 0, "--seed", 3, "--resume"]
    _torchrun(args + ["--max_steps", 8], tmp_path / "mixed.log", timeout=240)
    assert (out / "STAGE_DONE").exists() and (out / "checkpoint-8").is_dir()
    # Then, still under ZeRO-3: resume from the partitioned checkpoint for 2 more steps, merge, compare logits.
    (out / "STAGE_DONE").unlink()
    _torchrun(args + ["--max_steps", 10], tmp_path / "resume.log", timeout=240)
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-8"), summary["resumed_from"]
    assert json.loads((out / "trainer_state.json").read_text() if (out / "trainer_state.json").exists()
                      else (out / "checkpoint-10" / "trainer_state.json").read_text())["global_step"] == 10
    from train.merge_lora import merge
    rep = merge(str(tiny_models["qwen2_vl"]), str(out), str(tmp_path / "merged"))
    assert rep["max_abs_diff_reloaded"] <= 1e-4 and rep["max_abs_diff_in_memory"] <= 1e-4, rep
