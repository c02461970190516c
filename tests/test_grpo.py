"""Stage 3 (train/grpo.py, TRL's GRPOTrainer) on a tiny model and synthetic yes/no questions: the prompts are the
tokens evaluation decodes from, the held-out reward rises over a few dozen GRPO steps while only the LoRA weights
move, and a 2-process ZeRO-2 run over gloo completes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import TrainerCallback
from trl.data_utils import prepare_multimodal_messages

from data_process.synth import generate
from medvl.jsonio import read_records, write_json
from medvl.loading import load_processor
from train.config import parse_args
from train.finetune import run as run_stage
from tests.conftest import FAMILIES
from train.grpo import GRPORecords, RecordPrompts, check_stage3

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread():
    """Tiny matrices: one thread avoids OpenMP spinning against the other processes on a 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _yes_no(tmp_path, n_train, n_val, seed=1):
    """The synthetic 'Is there a lesion?' records (balanced yes/no, decided by a bright disc in the image)."""
    data = generate(tmp_path / "synth", n_train=n_train, n_val=n_val, n_test=0, size=56, seed=seed)
    out = {}
    for split in ("train", "val"):
        recs = [r for r in read_records(data[split]) if r["meta"]["question_type"] == "yes_no"]
        write_json(tmp_path / f"{split}_yes_no.json", recs)
        out[split] = str(tmp_path / f"{split}_yes_no.json")
    return data, out


@pytest.mark.parametrize("family", FAMILIES)
def test_prompts_are_the_tokens_eval_decodes_from(family, tiny_models, tmp_path):
    """What TRL generates from (apply_chat_template) and what it scores log-probs on (__call__) are the ids and
    pixels of VLProcessor.encode(train=False), special-token text in a record included."""
    data, _ = _yes_no(tmp_path, 2, 0)
    proc = load_processor(str(tiny_models[family]))
    recs = read_records(data["train"])[:3]
    recs[1]["conversations"][0]["value"] += " <|im_end|>"  # record text stays plain text
    rows = GRPORecords(recs, proc)
    prompts = [prepare_multimodal_messages(rows[i]["prompt"], images=rows[i]["images"]) for i in range(len(recs))]
    adapter = RecordPrompts(proc)
    tok = adapter.apply_chat_template(prompts, add_generation_prompt=True, tokenize=True, return_dict=True)
    enc = [proc.encode(r, train=False) for r in recs]
    assert tok["input_ids"] == [e.input_ids for e in enc]
    assert torch.equal(tok["pixel_values"], torch.cat([e.pixel_values for e in enc]))
    assert torch.equal(tok["image_grid_thw"], torch.cat([e.image_grid_thw for e in enc]))
    texts = adapter.apply_chat_template(prompts, add_generation_prompt=True)
    batch = adapter(images=[rows[i]["images"] for i in range(len(recs))], text=texts)
    width = batch["input_ids"].shape[1]
    for row, mask, e in zip(batch["input_ids"], batch["attention_mask"], enc):  # left padding
        assert row[width - len(e.input_ids):].tolist() == e.input_ids and int(mask.sum()) == len(e.input_ids)
    assert torch.equal(batch["mm_token_type_ids"].bool(), batch["input_ids"] == proc.image_token_id)
    assert rows[0]["image_size"] == (56, 56) and rows[0]["record"] is recs[0]


class WeightWatch(TrainerCallback):
    """Every parameter at train begin and which ones differ at train end."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.changed = sorted(n for n, p in model.named_parameters() if not torch.equal(p.detach(), self.before[n]))
        self.names = list(self.before)


def test_grpo_raises_the_heldout_reward_and_changes_only_lora_weights(tiny_models, tmp_path, one_thread):
    # Stage 3 starts from a Stage-2 result: 8 SFT steps teach the tiny model the answer words, not yet reliably
    # (about one sampled completion in six is the right yes/no); the closed reward then has something to climb.
    _, files = _yes_no(tmp_path, n_train=8, n_val=32)
    sft = tmp_path / "stage2"
    common = ["--use_cpu", "--save_strategy", "no", "--dataloader_num_workers", "0", "--seed", "0"]
    run_stage(*parse_args(["--stage", "2", "--model_name_or_path", str(tiny_models["qwen2_vl"]), "--train_data",
                           files["train"], "--output_dir", str(sft), "--train_llm", "full", "--lora_targets", "",
                           "--per_device_train_batch_size", "8", "--max_steps", "8", "--llm_lr", "1e-3",
                           "--report_to", "none", *common]))
    watch = WeightWatch()
    out = tmp_path / "stage3"
    from train import grpo
    summary = grpo.run(*parse_args([
        str(ROOT / "train/recipes/stage3.yaml"), "--model_name_or_path", str(sft), "--train_data", files["train"],
        "--eval_data", files["val"], "--output_dir", str(out), "--rewards", "closed:1.0",
        "--per_device_train_batch_size", "32", "--num_generations", "8", "--max_completion_length", "1",
        "--max_steps", "40", "--llm_lr", "3e-3", "--logging_steps", "1", *common]), callbacks=(watch,))
    start, end = summary["heldout_reward"]["start"], summary["heldout_reward"]["end"]
    # 32 held-out records x 8 samples, fixed sampling seed: the policy's mean reward on unseen images rises
    assert end["sampled"]["reward"] > start["sampled"]["reward"] + 0.1, (start, end)
    assert end["greedy"]["reward"] >= start["greedy"]["reward"] - 0.05, (start, end)
    assert start["n"] == 32 and end["sampled"]["closed"] == end["sampled"]["reward"]
    # only the trained adapter's LoRA weights moved (not the base, not TRL's frozen reference copy)
    assert watch.changed and all(".lora_" in n and ".default." in n for n in watch.changed), watch.changed
    assert any(".ref." in n for n in watch.names) and any("lora_B" in n for n in watch.changed)
    assert summary["optimizer_lrs"]["actual"] == {"llm": 3e-3}
    # the saved result is the adapter alone: LoRA tensors, no reference copy
    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys) and not (out / "ref").exists()
    on_disk = json.loads((out / "run_summary.json").read_text())
    assert on_disk["stage"] == 3 and on_disk["rewards"] == {"closed": 1.0} and (out / "STAGE_DONE").exists()
    assert {"reward", "rewards/closed/mean", "kl", "completions/mean_length"} <= set(on_disk["train_log"][-1])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(next((out / "tensorboard").rglob("events.out.tfevents*"))))
    events.Reload()
    assert {"train/rewards/closed/mean", "train/kl", "train/completions/mean_length"} <= set(events.Tags()["scalars"])
    print(f"\nstage 3 on CPU, tiny model: {summary['seconds_per_step']} s/step (32 completions of 1 token), held-out "
          f"sampled reward {start['sampled']['reward']:.3f} -> {end['sampled']['reward']:.3f}")


def test_stage3_refuses_what_it_cannot_do(tmp_path):
    args = ["--stage", "3", "--model_name_or_path", "m", "--train_data", "t", "--output_dir", str(tmp_path)]
    m, d, s, t, f = parse_args(args + ["--per_device_train_batch_size", "6"])
    with pytest.raises(ValueError, match="6 completions per step must be a multiple of --num_generations 8"):
        check_stage3(d, s, t, f)
    m, d, s, t, f = parse_args(args + ["--curriculum", "open_then_closed"])
    with pytest.raises(ValueError, match="--curriculum open_then_closed does not apply to --stage 3"):
        check_stage3(d, s, t, f)
    with pytest.raises(ValueError, match="--num_generations must be >= 2"):
        parse_args(args + ["--num_generations", "1"])


@pytest.mark.slow
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_two_process_zero_run_completes(zero, tiny_models, tmp_path):
    _, files = _yes_no(tmp_path, n_train=4, n_val=2)
    out = tmp_path / zero
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29500 + os.getpid() % 1000), "-m", "train.finetune", str(ROOT / "train/recipes/stage3.yaml"),
           str(ROOT / "train/recipes/cpu.yaml"), "--model_name_or_path", str(tiny_models["qwen2_vl"]),
           "--train_data", files["train"], "--eval_data", files["val"], "--output_dir", str(out),
           "--ddp_backend", "gloo", "--deepspeed", str(ROOT / f"ds_configs/{zero}.json"),
           "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "2",
           "--max_steps", "2", "--logging_steps", "1", "--save_strategy", "no", "--dataloader_num_workers", "0",
           "--rewards", "closed:1.0,format:0.2", "--llm_lr", "1e-3"]
    log = tmp_path / f"{zero}.log"
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=300).returncode
    assert rc == 0, log.read_text()[-4000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["training_args"]["deepspeed"].endswith(f"{zero}.json")
    assert summary["optimizer_lrs"]["actual"] == {"llm": 1e-3} and summary["train_metrics"]["train_loss"] is not None
    assert {"rewards/closed/mean", "rewards/format/mean", "kl"} <= set(summary["train_log"][-1])
    assert (out / "STAGE_DONE").exists() and summary["heldout_reward"]["start"]["n"] == 2  # ZeRO-3: taken in train
    with safe_open(out / "adapter_model.safetensors", "pt") as f:  # ZeRO-3: gathered, not empty partitions
        assert f.keys() and all(f.get_tensor(k).numel() > 0 for k in f.keys())


class StopAt(TrainerCallback):
    """A kill after step `n` (its checkpoint saved): the Trainer stops as a crashed run would have."""

    def __init__(self, n):
        self.n = n

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.n:
            control.should_training_stop = True


def _adapter(path):
    with safe_open(path / "adapter_model.safetensors", "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_stage3_killed_mid_stage_resumes_to_the_uninterrupted_result(tiny_models, tmp_path, one_thread):
    """stage3.yaml resumes by default: a run stopped after its step-2 checkpoint and started again ends with the
    adapter an uninterrupted run trains (same sampled completions: the Trainer restores the RNG state; the KL
    reference stays the fresh adapter, not the checkpoint's)."""
    _, files = _yes_no(tmp_path, n_train=8, n_val=2)
    sft = tmp_path / "stage2"
    common = ["--use_cpu", "--dataloader_num_workers", "0", "--seed", "0"]
    run_stage(*parse_args(["--stage", "2", "--model_name_or_path", str(tiny_models["qwen2_vl"]), "--train_data",
                           files["train"], "--output_dir", str(sft), "--train_llm", "full", "--lora_targets", "",
                           "--per_device_train_batch_size", "8", "--max_steps", "8", "--llm_lr", "1e-3",
                           "--report_to", "none", "--save_strategy", "no", *common]))
    from train import grpo

    def stage3(out, callbacks=()):
        return grpo.run(*parse_args([
            str(ROOT / "train/recipes/stage3.yaml"), "--model_name_or_path", str(sft), "--train_data", files["train"],
            "--output_dir", str(out), "--rewards", "closed:1.0", "--per_device_train_batch_size", "16",
            "--num_generations", "8", "--max_completion_length", "1", "--max_steps", "4", "--llm_lr", "3e-3",
            "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "2", "--report_to", "none",
            *common]), callbacks=callbacks)
    whole = stage3(tmp_path / "whole")
    assert whole["resumed_from"] is None
    first = stage3(tmp_path / "killed", callbacks=(StopAt(2),))
    assert first["train_metrics"]["epoch"] < whole["train_metrics"]["epoch"]  # it did stop early
    again = stage3(tmp_path / "killed")
    assert again["resumed_from"].endswith("checkpoint-2") and (tmp_path / "killed" / "checkpoint-4").is_dir()
    a, b = _adapter(tmp_path / "whole"), _adapter(tmp_path / "killed")
    assert a.keys() == b.keys() and any(float(t.abs().max()) > 0 for k, t in a.items() if "lora_B" in k)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-7, msg=k)
    assert [h["reward"] for h in again["train_log"]][-2:] == [h["reward"] for h in whole["train_log"]][-2:]
