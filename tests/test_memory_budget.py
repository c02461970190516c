"""--memory_budget_gib (train/memory_budget.py): the plan over the measured Qwen2-VL-2B numbers, the per-token model
against those measurements, and the option through python -m train.finetune's run on a tiny model."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from data_process.synth import generate
from train import memory_budget as mb
from train.builder import load, load_splits, prepare_model, sample_lengths
from train.config import parse_args
from train.finetune import main, run
from train.memory_budget import GIB, BudgetTooSmall, TextDims, plan

QWEN2_VL_2B = TextDims(hidden=1536, intermediate=8960, layers=28, vocab=151936, dtype_bytes=2)
# 2.2e9 bf16 weights + 18.5M fp32 LoRA params (r16 on q,k,v,o,gate,up,down) x (param + grad + 2 Adam states)
STATIC_2B = int(4.1 * GIB + 18.5e6 * 4 * 4)
# 32 samples/row ~ 13.9k tokens: ~435 tokens per sample, short answers (~4 labelled tokens)
LENGTHS = [435] * 2000
LABELLED = [4] * 2000


def _plan(budget_gib, lengths=LENGTHS, labelled=LABELLED, batch=32, accum=1, **kw):
    return plan(int(budget_gib * GIB), STATIC_2B, lengths, batch, accum, QWEN2_VL_2B, labelled=labelled, **kw)


# ------------------------------------------------------------------------------------------------ the plan
def test_64_gib_runs_the_fast_path_without_checkpointing():
    p = _plan(64)
    assert (p.samples_per_row, p.gradient_accumulation_steps, p.gradient_checkpointing, p.loss_chunk) == \
        (32, 1, False, 4096)
    assert p.estimated_peak_bytes <= 64 * GIB * (1 - mb.SAFETY_MARGIN)


def test_22_gib_turns_checkpointing_on_and_keeps_the_row():
    p = _plan(22)
    assert p.gradient_checkpointing and p.samples_per_row == 32 and p.gradient_accumulation_steps == 1
    assert "gradient checkpointing on" in p.reason


def test_a_budget_too_small_is_one_line_naming_budget_and_minimum():
    with pytest.raises(BudgetTooSmall) as e:
        _plan(4)
    msg = str(e.value)
    assert "\n" not in msg and "--memory_budget_gib 4.0" in msg and "needs ~" in msg
    need = float(msg.split("needs ~")[1].split(" GiB")[0])
    assert 5 < need < 7  # static 4.4 GiB + fixed overhead + one sample, over the margin
    assert _plan(need + 0.1).samples_per_row >= 1  # the minimum it names is enough


@pytest.mark.parametrize("budget, batch, accum", [(8, 32, 1), (7, 16, 3), (12, 64, 2), (30, 32, 4)])
def test_effective_batch_is_kept(budget, batch, accum):
    p = _plan(budget, batch=batch, accum=accum)
    assert p.samples_per_row <= batch
    assert p.samples_per_row * p.gradient_accumulation_steps == batch * accum, p.reason


def test_effective_batch_not_a_multiple_is_said():
    # 7 samples; a budget where 4 fit but no divisor of 7 between 2 and 4 does: 4 x 2 = 8, said in the reason
    static, dims = 0, QWEN2_VL_2B
    four = mb.estimate_peak(dims, static, 4 * 435, 16, True, 4096) + 64
    p = plan(int(four / (1 - mb.SAFETY_MARGIN)), static, LENGTHS, 7, 1, dims, labelled=LABELLED)
    assert p.samples_per_row == 4 and p.gradient_accumulation_steps == 2  # ceil(7 / 4)
    assert "effective batch 8, not 7" in p.reason
    # 3 x 7 = 21: 3 divides it, so 3 per row (exact) rather than 4 per row (24)
    p = plan(int(four / (1 - mb.SAFETY_MARGIN)), static, LENGTHS, 7, 3, dims, labelled=LABELLED)
    assert (p.samples_per_row, p.gradient_accumulation_steps) == (3, 7) and "effective batch" not in p.reason


def test_the_worst_row_is_made_of_the_longest_samples():
    # one long sample among short ones: GC off fits the average row of 32 (~14k tokens) but not one holding it
    lengths = [435] * 1999 + [12000]
    assert _plan(64, lengths=lengths).gradient_checkpointing is True
    assert _plan(64).gradient_checkpointing is False
    assert mb.worst_rows([5, 1, 9, 3], 3) == [0, 9, 14, 17]
    assert mb.worst_rows([5, 1], 3) == [0, 5, 6, 6]  # fewer samples than a row: all of them


def test_small_rows_without_checkpointing_are_not_chosen():
    # 40 GiB: GC off fits ~18 samples (~7.8k tokens, launch-bound) -> GC on with the whole row instead
    p = _plan(40)
    assert p.gradient_checkpointing and p.samples_per_row == 32
    # longer samples: a row of the same memory holds >= 8192 tokens -> GC off with fewer samples per row
    p = _plan(48, lengths=[1100] * 2000, labelled=[8] * 2000)
    assert not p.gradient_checkpointing and (p.samples_per_row, p.gradient_accumulation_steps) == (8, 4), p.reason
    # 11 of 870 tokens fit without GC, but 11 does not divide 32 and 8 would be under 8192 tokens: the effective
    # batch stays exact with GC on (the whole row) rather than 11 x 3 = 33
    p = _plan(48, lengths=[870] * 2000, labelled=[8] * 2000)
    assert p.gradient_checkpointing and (p.samples_per_row, p.gradient_accumulation_steps) == (32, 1), p.reason
    assert "not dividing the effective batch 32" in p.reason


def test_an_effective_batch_that_cannot_stay_exact_is_said():
    # 31 (prime) samples requested, only 15 of 3000 tokens fit even with GC: 15 x 3 = 45, and the reason says so
    p = _plan(22, lengths=[3000] * 200, labelled=[8] * 200, batch=31)
    assert p.gradient_checkpointing and p.samples_per_row * p.gradient_accumulation_steps != 31
    assert f"effective batch {p.samples_per_row * p.gradient_accumulation_steps}, not 31" in p.reason


def test_the_loss_chunk_shrinks_when_the_logits_do_not_fit():
    # long answers (everything labelled, as for captions): 4096 rows of 152k logits are 5.8 GiB
    full = _plan(64, labelled=None)
    assert full.loss_chunk < 4096 and f"loss_chunk 4096 -> {full.loss_chunk}" in full.reason
    assert _plan(64).loss_chunk == 4096  # short answers: the chunk never holds 4096 rows


# ------------------------------------------------------------------------------------------------ the per-token model
@pytest.mark.parametrize("gc, tokens, labelled, measured_gib", [
    (False, 13900, 130, 59.6), (False, 13900, 130, 61.3), (True, 14050, 130, 10.0), (True, 27600, 260, 14.3)])
def test_the_model_reproduces_the_measured_2b_peaks(gc, tokens, labelled, measured_gib):
    est = mb.estimate_peak(QWEN2_VL_2B, STATIC_2B, tokens, labelled, gc, 4096) / GIB
    assert abs(est - measured_gib) / measured_gib < 0.15, est


def test_per_token_bytes_match_the_measured_slopes():
    off = mb.activation_bytes_per_token(QWEN2_VL_2B, False)
    on = mb.activation_bytes_per_token(QWEN2_VL_2B, True)
    assert 3.6e6 < off < 4.6e6  # ~4.0 MB/token measured with GC off
    assert 0.30e6 < on < 0.40e6  # 0.36-0.40 MB/token with GC on (logits included there)
    assert mb.activation_bytes_per_token(TextDims(3584, 18944, 28, 152064), False) > 2 * off  # a 7B LLM


def test_budget_values():
    assert mb.parse_budget("") is None and mb.parse_budget("0") is None and mb.parse_budget(0.0) is None
    assert mb.parse_budget("auto") == "auto" and mb.parse_budget("22.5") == 22.5
    with pytest.raises(ValueError, match="memory_budget_gib"):
        mb.parse_budget("lots")


# ------------------------------------------------------------------------------------------------ end to end
def _argv(tiny, data, out, *extra):
    return ["--model_name_or_path", str(tiny), "--train_data", str(data), "--stage", "2", "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--num_train_epochs", "1", "--use_cpu", "--report_to", "none",
            "--save_strategy", "no", "--logging_steps", "1", "--dataloader_num_workers", "0", "--bf16", *extra]


def test_finetune_applies_and_records_the_plan(tiny_models, tmp_path):
    data = generate(tmp_path / "synth", n_train=8, n_val=2, n_test=2, size=64, seed=3)["train"]
    tiny = tiny_models["qwen2_vl"]
    # the budget from the product's own pieces: GC on fits a row of the 2 longest samples, not of the 3 longest
    margs, dargs, sargs, targs, fargs = parse_args(_argv(tiny, data, tmp_path / "probe", "--packing", "--chunked_loss"))
    model, processor, family = load(margs, dargs, targs)
    model, _ = prepare_model(model, family, sargs, targs, fargs)
    splits, _ = load_splits(dargs, processor, progress=False)
    tokens, labelled = sample_lengths(splits["train"], processor)
    static, dims = mb.static_bytes(model), mb.text_dims(model)
    rows, labels = mb.worst_rows(tokens, 4), mb.worst_rows(labelled, 4)
    two, three = (mb.estimate_peak(dims, static, rows[b], labels[b], True, 4096) for b in (2, 3))
    assert three > two
    budget_gib = (two + three) / 2 / (1 - mb.SAFETY_MARGIN) / GIB

    out = tmp_path / "run"
    summary = run(*parse_args(_argv(tiny, data, out, "--packing", "--chunked_loss",
                                    "--memory_budget_gib", repr(budget_gib))))
    plan_ = summary["memory_plan"]
    assert (plan_["samples_per_row"], plan_["gradient_accumulation_steps"], plan_["gradient_checkpointing"]) == \
        (2, 2, True)
    ta = summary["training_args"]
    assert ta["per_device_train_batch_size"] == 2 and ta["gradient_accumulation_steps"] == 2
    assert ta["gradient_checkpointing"] is True and summary["effective_batch_size"] == 4
    assert summary["train_metrics"]["train_loss"] > 0
    assert json.loads((out / "run_summary.json").read_text())["memory_plan"] == plan_

    # without the option: nothing planned, the arguments as given
    plain = run(*parse_args(_argv(tiny, data, tmp_path / "plain", "--packing", "--max_steps", "1")))
    assert plain["memory_plan"] is None and plain["training_args"]["per_device_train_batch_size"] == 4


def test_memory_budget_without_packing_is_refused(tiny_models, tmp_path, capsys):
    data = generate(tmp_path / "synth", n_train=2, n_val=1, n_test=1, size=64, seed=3)["train"]
    argv = _argv(tiny_models["qwen2_vl"], data, tmp_path / "run", "--memory_budget_gib", "20")
    with pytest.raises(ValueError, match="--memory_budget_gib needs --packing"):
        parse_args(argv)
    with pytest.raises(SystemExit) as e:  # the entry point: one line, before any model loads
        main(argv)
    assert str(e.value).startswith("error: --memory_budget_gib needs --packing") and "\n" not in str(e.value)
    with pytest.raises(SystemExit, match="must be a number of GiB"):
        main(argv[:-1] + ["plenty", "--packing"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no GPU is")
def test_liger_kernels_without_a_gpu_is_one_line(tiny_models, tmp_path):
    """--liger_kernels (medvl/liger.py) is Triton: on a CPU machine the entry point says so in one line."""
    data = generate(tmp_path / "synth", n_train=2, n_val=1, n_test=1, size=64, seed=3)["train"]
    with pytest.raises(SystemExit) as e:
        main(_argv(tiny_models["qwen2_vl"], data, tmp_path / "run", "--packing", "--liger_kernels"))
    assert str(e.value) == "error: --liger_kernels needs a CUDA GPU (liger-kernel's kernels are Triton)"


def _mixed_lengths(n=384, seed=0):
    """Like the bench records: ~320 image + 8-40 question tokens, 70% short answers, 30% of 40-300 tokens."""
    import random
    rng = random.Random(seed)
    return [330 + rng.randint(8, 40) + (rng.randint(1, 8) if rng.random() < 0.7 else rng.randint(40, 300))
            for _ in range(n)]


def test_random_order_rows_are_bounded_tighter_and_still_hold():
    import random
    lengths = _mixed_lengths()
    worst, rand = mb.worst_rows(lengths, 64), mb.random_rows(lengths, 64)
    assert all(r <= w for r, w in zip(rand, worst)) and rand[32] < 0.8 * worst[32]
    assert mb.random_rows([400] * 50, 8)[8] == 3200  # no spread: exactly B x length
    # one rare outlier is not normal: a row may hold it beside B-1 average samples, whether or not the sampled
    # lengths contain it (`longest`: validation's longest kept sample of the whole set)
    assert mb.random_rows([400] * 1000 + [4000], 32)[32] >= 31 * 400 + 4000
    assert mb.random_rows([400] * 100, 32, longest=4000)[32] == 31 * 400 + 4000
    rng = random.Random(1)  # 20,000 shuffled rows of 32: none exceeds the bound (5 sigma: ~3e-7 per row)
    assert max(sum(rng.sample(lengths, 32)) for _ in range(20000)) <= rand[32]


def test_shuffled_rows_let_an_80_gib_card_run_without_checkpointing():
    lengths = _mixed_lengths(2000)
    labelled = [max(1, n - 380) for n in lengths]
    ordered = _plan(80, lengths=lengths, labelled=labelled)
    shuffled = _plan(80, lengths=lengths, labelled=labelled, shuffled=True)
    assert ordered.gradient_checkpointing and "the longest samples together" in ordered.reason
    assert not shuffled.gradient_checkpointing and shuffled.samples_per_row == 32, shuffled.reason
    assert "drawn at random" in shuffled.reason


def test_random_order_plans_from_a_fixed_sample_of_a_large_set(monkeypatch):
    """Random rows need only the lengths' mean and spread: a large set is sampled (the same records every run),
    an ordered one (curriculum) is encoded whole, since its plan needs the longest samples."""
    from train import builder

    seen = []
    monkeypatch.setattr(builder, "LENGTH_SAMPLE", 10)
    monkeypatch.setattr(builder, "sample_lengths", lambda recs, proc: (seen.append([r["id"] for r in recs]),
                                                                         ([400] * len(recs), [4] * len(recs)))[1])
    monkeypatch.setattr(builder, "apply_memory_budget", lambda *a, **k: None)
    records = [{"id": f"r{i}"} for i in range(50)]
    args = SimpleNamespace(memory_budget_gib="20")
    targs = SimpleNamespace(device=SimpleNamespace(type="cpu"), process_index=1)
    builder.plan_memory(None, None, targs, args, records, shuffled=True)
    builder.plan_memory(None, None, targs, args, records, shuffled=True)
    builder.plan_memory(None, None, targs, args, records, shuffled=False)
    assert len(seen[0]) == 10 and seen[0] == seen[1] and len(seen[2]) == 50
