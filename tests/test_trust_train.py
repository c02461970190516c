"""Every speed path trains like the padded path: same loss, same LoRA gradients through `Trainer.training_step`, with
`num_items_in_batch` as the Trainer counts it, under gradient accumulation and across two processes (#16.1)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainingArguments

import train.builder
from data_process.synth import generate
from medvl.collate import VLCollator
from medvl.jsonio import write_jsonl
from medvl.packing import PackedCollator
from tests.conftest import FAMILIES, qa_record, write_image
from tests.test_packing import _samples, _stage_model
from train.builder import make_trainer
from train.config import SpeedArguments, StageArguments
from train.finetune import parse_args, run
from train.vision_cache import VisionFeatureCache

ROOT = Path(__file__).resolve().parents[1]
# name -> (packed rows, chunked loss, vision cache)
VARIANTS = {"padded": (False, False, False), "padded+chunked": (False, True, False), "packed": (True, False, False),
            "packed+chunked": (True, True, False), "packed+vision_cache": (True, False, True)}


def _trainer(model, proc, fam, tmp, ga, chunked, cache):
    """The product's trainer (train/builder.py) around a prepared model."""
    args = TrainingArguments(output_dir=str(tmp / "t"), use_cpu=True, report_to=[], label_names=["labels"],
                             remove_unused_columns=False, gradient_accumulation_steps=ga,
                             per_device_train_batch_size=4 // ga)
    return make_trainer(model, proc, fam, args, StageArguments(stage=2).apply_preset(),
                        fargs=SpeedArguments(chunked_loss=chunked, loss_chunk=7), vision_cache=cache).trainer


def _micro(enc, ga, collate):
    per = len(enc) // ga
    return [collate(enc[i:i + per]) for i in range(0, len(enc), per)]


def _reference(model, micro, token_weighted: bool):
    """The padded path's loss over the accumulated batch, from the model alone (no Trainer): Σ NLL / Σ labelled
    tokens when the model takes num_items_in_batch (Qwen2-VL), else the mean of the micro-batch means (Qwen2.5-VL
    and Qwen3-VL set accepts_loss_kwargs = False). Returns it and its LoRA gradients."""
    model.zero_grad()
    outs = [model(**b).loss for b in micro]
    if token_weighted:
        counts = [int((b["labels"][:, 1:] != -100).sum()) for b in micro]
        loss = sum(o * c for o, c in zip(outs, counts)) / sum(counts)
    else:
        loss = sum(outs) / len(outs)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def setups(tiny_models, tmp_path_factory):
    """Per family, built once: a LoRA model with live B matrices, four encoded samples, and per GA the reference."""
    class _Lazy(dict):
        def __missing__(self, family):
            tmp = tmp_path_factory.mktemp(family)
            model, proc, fam = _stage_model(tiny_models[family], tmp)
            torch.manual_seed(0)
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    torch.nn.init.normal_(p, std=0.02)
            model.train()
            enc = _samples(proc, tmp, text_only_last=True)
            weighted = _trainer(model, proc, fam, tmp, 1, False, None).model_accepts_loss_kwargs
            padded = VLCollator(proc.pad_token_id, proc.image_token_id)
            refs = {ga: _reference(model, _micro(enc, ga, padded), weighted) for ga in (1, 2)}
            self[family] = (model, proc, fam, enc, refs, tmp)
            return self[family]
    return _Lazy()


@pytest.mark.parametrize("ga", [1, 2])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("family", FAMILIES)
def test_training_step_matches_padded_loss_and_grads(family, variant, ga, setups):
    packed, chunked, use_cache = VARIANTS[variant]
    if use_cache and family == "qwen3_vl":
        pytest.skip("the vision cache refuses Qwen3-VL by design (deepstack features)")
    model, proc, fam, enc, refs, tmp = setups[family]
    ref_loss, ref_grads = refs[ga]
    cache = VisionFeatureCache(fam) if use_cache else None
    trainer = _trainer(model, proc, fam, tmp, ga, chunked, cache)
    collate = (PackedCollator(proc.pad_token_id, proc.image_token_id, emit_image_keys=use_cache) if packed
               else VLCollator(proc.pad_token_id, proc.image_token_id))
    # as the Trainer's loop does it: one count over the accumulated micro-batches, then one training_step each
    batches, num_items = trainer.get_batch_samples(iter(_micro(enc, ga, collate)), ga, torch.device("cpu"))
    assert (num_items is not None) == trainer.model_accepts_loss_kwargs
    trainer.current_gradient_accumulation_steps = len(batches)
    model.zero_grad()
    loss = sum(trainer.training_step(model, b, num_items) for b in batches)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    got = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert got.keys() == ref_grads.keys()
    for n in got:
        torch.testing.assert_close(got[n], ref_grads[n], rtol=1e-4, atol=1e-6, msg=lambda m: f"{n}: {m}")


def _first_step_log(args: list, out: Path) -> dict:
    """Step 1's log entry, at full precision (trainer_state.json of checkpoint-1; the printed logs are rounded)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29500 + (os.getpid() + len(args)) % 1000), "-m", "train.finetune", *map(str, args),
           "--output_dir", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:]
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    return next(h for h in state["log_history"] if "grad_norm" in h)


@pytest.mark.slow
def test_two_processes_packed_step_equals_padded_step(tiny_models, tmp_path):
    """DDP over gloo, GA 2: num_items_in_batch is summed over both ranks, so the scale is the parent's cross-device
    arithmetic; the packed run's first-step loss and grad norm must be the padded run's."""
    data = generate(tmp_path / "synth", n_train=8, n_val=2, n_test=2, size=64, seed=3)
    common = ["--model_name_or_path", tiny_models["qwen2_vl"], "--train_data", data["train"], "--stage", 2,
              "--use_cpu", "--ddp_backend", "gloo", "--per_device_train_batch_size", 2,
              "--gradient_accumulation_steps", 2, "--max_steps", 1, "--logging_steps", 1, "--save_steps", 1,
              "--report_to", "none", "--dataloader_num_workers", 0, "--seed", 0,
              "--lora_dropout", 0]  # dropout masks follow the tensor shapes, which packing changes
    padded = _first_step_log(common, tmp_path / "padded")
    packed = _first_step_log(common + ["--packing"], tmp_path / "packed")
    assert packed["grad_norm"] == pytest.approx(padded["grad_norm"], rel=1e-4), (padded, packed)
    assert packed["loss"] == pytest.approx(padded["loss"], rel=1e-4), (padded, packed)


def test_failure_inside_a_dataloader_worker_reaches_the_run_summary(tiny_models, tmp_path, monkeypatch):
    """#16.11: an image deleted after validation is skipped in a worker process; run_summary names it."""

    recs = [qa_record(f"r{i}", write_image(tmp_path / f"i{i}.png", (56, 56), seed=i)) for i in range(4)]
    write_jsonl(tmp_path / "train.jsonl", recs)
    real = train.builder.validate_cached  # the builder's validation pass

    def validate_then_delete(*a, **k):  # the file disappears between validation and the step that reads it
        out = real(*a, **k)
        (tmp_path / "i2.png").unlink()
        return out
    monkeypatch.setattr(train.builder, "validate_cached", validate_then_delete)
    summary = run(*parse_args([
        "--model_name_or_path", str(tiny_models["qwen2_vl"]), "--train_data", str(tmp_path / "train.jsonl"),
        "--stage", "2", "--output_dir", str(tmp_path / "run"), "--per_device_train_batch_size", "2",
        "--num_train_epochs", "1", "--use_cpu", "--report_to", "none", "--save_strategy", "no",
        "--dataloader_num_workers", "1"]))
    assert list(summary["failed_at_train_time"]) == ["r2"], summary["failed_at_train_time"]
    assert "missing_image" in summary["failed_at_train_time"]["r2"]
    written = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    assert written["failed_at_train_time"] == summary["failed_at_train_time"]
