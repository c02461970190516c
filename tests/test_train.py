"""Two-stage training on tiny models: what trains, what stays bit-identical, LRs, logs, merge, resume, bad samples."""
import json

import pytest
import torch
from safetensors.torch import load_file

from medvl.jsonio import read_records, write_json
from tests.conftest import FAMILIES
from train.finetune import parse_args, run


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from data_process.synth import generate
    return generate(tmp_path_factory.mktemp("synth"), n_train=24, n_val=6, n_test=6, size=64, seed=1)


def _train(model, data, out, *extra):
    argv = ["--model_name_or_path", str(model), "--train_data", str(data), "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--use_cpu", "--report_to", "none", "--save_strategy", "no",
            "--logging_steps", "1", "--seed", "0", "--dataloader_num_workers", "0", *map(str, extra)]
    return run(*parse_args(argv))


def _weights(path):
    from transformers import AutoModelForImageTextToText
    return {k: v.clone() for k, v in AutoModelForImageTextToText.from_pretrained(path).state_dict().items()}


def _changed(base: dict, new: dict) -> set[str]:
    assert base.keys() == new.keys()
    return {k for k in base if not torch.equal(base[k], new[k])}


@pytest.mark.parametrize("family", FAMILIES)
def test_stage1_changes_only_merger_and_stage2_only_llm_linears(family, tiny_models, synth, tmp_path):
    from train.merge_lora import merge

    base = tiny_models[family]
    _train(base, synth["stage1_captions"], tmp_path / "s1", "--stage", 1, "--max_steps", 3, "--learning_rate", 1e-2,
           "--merger_lr", 1e-2)
    rep = merge(str(base), str(tmp_path / "s1"), str(tmp_path / "s1m"), read_records(synth["val"]))
    assert rep["max_abs_diff_reloaded"] <= 1e-4
    w0, w1 = _weights(base), _weights(tmp_path / "s1m")
    changed1 = _changed(w0, w1)
    assert changed1, "stage 1 changed nothing"
    merger_names = ("visual.merger.mlp.0.weight", "visual.merger.mlp.2.weight") if family != "qwen3_vl" else \
        ("visual.merger.linear_fc1.weight", "visual.merger.linear_fc2.weight")
    assert all(any(k.endswith(m) for k in changed1) for m in merger_names), changed1
    assert all(".visual." in k and "merger" in k and k.endswith(".weight") for k in changed1), changed1

    _train(tmp_path / "s1m", synth["train"], tmp_path / "s2", "--stage", 2, "--max_steps", 3,
           "--learning_rate", 1e-2, "--llm_lr", 1e-2)
    merge(str(tmp_path / "s1m"), str(tmp_path / "s2"), str(tmp_path / "s2m"))
    changed2 = _changed(w1, _weights(tmp_path / "s2m"))
    assert changed2 and all("language_model.layers." in k and "visual" not in k for k in changed2), changed2
    assert {k.split(".")[-2] for k in changed2} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert not any(k.endswith("bias") for k in changed2)


def test_loss_decreases_and_tensorboard_has_train_eval_and_generation_scalars(tiny_models, synth, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_json(tmp_path / "fixed.json", read_records(synth["train"])[:8])  # a fixed tiny set it can fit
    s = _train(tiny_models["qwen2_vl"], tmp_path / "fixed.json", tmp_path / "run", "--stage", 2, "--max_steps", 36,
               "--llm_lr", 1e-2, "--lr_scheduler_type", "constant", "--lora_r", 8, "--eval_data", synth["val"], "--eval_strategy", "steps",
               "--eval_steps", 18, "--gen_eval_samples", 6, "--gen_max_new_tokens", 4, "--report_to", "tensorboard",
               "--per_device_eval_batch_size", 6, "--warmup_steps", 0)
    ea = EventAccumulator(s["tensorboard_dir"])
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    for tag in ["train/loss", "eval/loss", "eval/exact_match", "eval/closed_accuracy", "eval/token_f1"]:
        assert tag in tags, (tag, tags)
    losses = [e.value for e in ea.Scalars("train/loss")]
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first - 0.5, losses


def test_group_lrs_are_the_ones_asked_for(tiny_models, synth, tmp_path):
    s = _train(tiny_models["qwen2_vl"], synth["train"], tmp_path / "lr", "--stage", 2, "--train_merger", "lora",
               "--lora_targets", "attn", "--merger_lr", 3e-4, "--llm_lr", 7e-5, "--learning_rate", 1e-3, "--max_steps", 1)
    assert s["optimizer_lrs"]["actual"] == {"merger": 3e-4, "llm": 7e-5}


def test_bad_samples_rejected_before_training_with_their_ids(tiny_models, synth, tmp_path):
    recs = read_records(synth["train"])[:8]
    bad_img = dict(recs[0], id="bad-image", image=str(tmp_path / "nope.png"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    broken = dict(recs[1], id="broken-image", image=str(tmp_path / "broken.png"))
    long = dict(recs[2], id="too-long", conversations=[{"from": "human", "value": "<image>\n" + "why " * 400},
                                                       {"from": "gpt", "value": "yes"}])
    write_json(tmp_path / "mixed.json", recs + [bad_img, broken, long])
    s = _train(tiny_models["qwen2_vl"], tmp_path / "mixed.json", tmp_path / "out", "--stage", 2, "--max_steps", 3,
               "--max_len", 256)
    rep = s["validation_reports"]["train"]
    assert rep["input"] == 11 and rep["kept"] == 8 and rep["rejected"] == 3
    by = {k: v["ids"] for k, v in rep["rejected_by_reason"].items()}
    assert by == {"missing_image": ["bad-image"], "unreadable_image": ["broken-image"], "over_length": ["too-long"]}
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert summary["validation_reports"]["train"]["rejected"] == 3


def test_resume_continues_from_last_checkpoint(tiny_models, synth, tmp_path):
    out = tmp_path / "res"
    _train(tiny_models["qwen2_vl"], synth["train"], out, "--stage", 2, "--max_steps", 2, "--save_strategy", "steps",
           "--save_steps", 2)
    assert (out / "checkpoint-2").is_dir()
    s = _train(tiny_models["qwen2_vl"], synth["train"], out, "--stage", 2, "--max_steps", 4, "--save_strategy", "steps",
               "--save_steps", 2, "--resume", True)
    assert s["resumed_from"].endswith("checkpoint-2")
    assert (out / "checkpoint-4").is_dir()
    assert load_file(out / "adapter_model.safetensors")


def test_one_process_seeing_several_gpus_is_refused():
    # Regression (2x H200): a single process on a 2-GPU machine made the Trainer use DataParallel, which broke
    # Qwen-VL's vision tower with a StopIteration deep inside transformers. Now it stops with what to do instead.
    from train.builder import check_one_gpu_per_process
    check_one_gpu_per_process(1)
    check_one_gpu_per_process(0)
    with pytest.raises(ValueError, match="one process per GPU"):
        check_one_gpu_per_process(2)


def test_by_hand_defaults_write_tensorboard_with_a_loss_curve_and_print_existing_paths(tiny_models, synth, tmp_path,
                                                                                      capsys):
    """python -m train.finetune as the README's recipes run it by hand (no --report_to, no --logging_steps): the
    curves are written (transformers >= 5.24 alone would write none) and a 6-step run logs its loss every step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from train.finetune import main

    out = tmp_path / "run"
    main(["--model_name_or_path", str(tiny_models["qwen2_vl"]), "--train_data", str(synth["train"]),
          "--output_dir", str(out), "--per_device_train_batch_size", "4", "--use_cpu", "--save_strategy", "no",
          "--max_steps", "6", "--dataloader_num_workers", "0"])
    ea = EventAccumulator(str(out / "tensorboard"))
    ea.Reload()
    assert [e.step for e in ea.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    printed = capsys.readouterr().out
    assert f"adapter in {out.resolve()}" in printed and f"tensorboard --logdir {(out / 'tensorboard').resolve()}" in printed
