"""#16.6: a rerun with other settings (decoding, pixel budget, prompt, a retrained adapter under the same name) is
refused with what differs and how to start fresh, never mixed into the earlier outputs; the same for perplexity
and for a finished stage of scripts/two_stage.sh."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from eval.generate import generate_for_model, main as generate_main
from eval.model_spec import ModelSpec
from eval.perplexity import perplexity_for_model
from tests.conftest import qa_record, write_image

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(dtype="float32", progress=False, num_workers=0)
# the refusals raise eval.output_dir.SettingsChanged, a RuntimeError (caught as such here, so the test does not
# need the module at import time)


def _records(tmp_path, n):
    return [qa_record(f"r{i}", write_image(tmp_path / f"i{i}.png", size=(64 + 8 * i, 80), seed=i), "Is there a lesion?",
                      "yes" if i % 2 else "no") for i in range(n)]


def _ids(pred):
    return [json.loads(line)["id"] for line in open(pred)]


def _adapter(base, out, seed):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(base)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).save_pretrained(out)
    return out


def test_changed_decoding_or_budget_is_refused_and_overwrite_starts_fresh(tiny_models, tmp_path):
    recs = _records(tmp_path, 5)
    spec = ModelSpec.parse(f"m={tiny_models['qwen2_vl']}")
    pred = generate_for_model(spec, recs[:3], tmp_path / "out", max_new_tokens=4, **FAST)
    before = pred.read_bytes()
    with pytest.raises(RuntimeError, match=r"differs: decoding\).*--overwrite"):
        generate_for_model(spec, recs, tmp_path / "out", max_new_tokens=8, **FAST)
    with pytest.raises(RuntimeError, match=r"differs: pixel_budget\)"):
        generate_for_model(spec, recs, tmp_path / "out", max_new_tokens=4, max_pixels=56 * 56 * 2, **FAST)
    with pytest.raises(RuntimeError, match=r"differs: system_prompt\)"):
        generate_for_model(spec, recs, tmp_path / "out", max_new_tokens=4, system_prompt="Answer briefly.",
                           prompt_mode="custom", **FAST)
    assert pred.read_bytes() == before, "a refused rerun must not touch the predictions"
    generate_for_model(spec, recs, tmp_path / "out", max_new_tokens=4, **FAST)  # same settings: resumes
    info = json.loads((pred.parent / "run_info.json").read_text())
    assert info["already_done"] == 3 and sorted(_ids(pred)) == [r["id"] for r in recs]
    generate_for_model(spec, recs, tmp_path / "out", max_new_tokens=8, overwrite=True, **FAST)
    info = json.loads((pred.parent / "run_info.json").read_text())
    assert info["already_done"] == 0 and info["fingerprint"]["decoding"]["max_new_tokens"] == 8
    assert sorted(_ids(pred)) == [r["id"] for r in recs]


def test_retrained_adapter_under_the_same_name_is_refused_with_a_one_line_message(tiny_models, tmp_path, capsys):
    base = tiny_models["qwen2_vl"]
    adapter = _adapter(base, tmp_path / "adapter", seed=1)
    recs = _records(tmp_path, 3)
    (tmp_path / "test.json").write_text(json.dumps(recs))
    argv = ["--model", f"s2={base}+{adapter}", "--test_data", str(tmp_path / "test.json"), "--out_dir",
            str(tmp_path / "out"), "--max_new_tokens", "4", "--dtype", "float32", "--device", "cpu", "--num_workers", "0"]
    generate_main(argv + ["--limit", "2"])
    _adapter(base, adapter, seed=2)  # retrained in place
    with pytest.raises(SystemExit) as e:
        generate_main(argv)
    msg = str(e.value.code)
    assert "\n" not in msg and "differs: adapters" in msg and "--overwrite" in msg, msg
    assert sorted(_ids(tmp_path / "out" / "s2" / "predictions.jsonl")) == ["r0", "r1"]
    # perplexity of the retrained adapter beside the old predictions: refused too
    with pytest.raises(RuntimeError, match="predictions.jsonl was made with other settings.*adapters"):
        perplexity_for_model(ModelSpec.parse(f"s2={base}+{adapter}"), recs, tmp_path / "out", **FAST)
    generate_main(argv + ["--overwrite"])
    res = perplexity_for_model(ModelSpec.parse(f"s2={base}+{adapter}"), recs, tmp_path / "out", **FAST)
    assert res["fingerprint"]["adapters"][0]["weights_sha256"]
    # a stored perplexity made at another budget is refused as well
    with pytest.raises(RuntimeError, match=r"pixel_budget"):
        perplexity_for_model(ModelSpec.parse(f"s2={base}+{adapter}"), recs, tmp_path / "out", max_pixels=56 * 56 * 2,
                             **FAST)


def test_two_stage_refuses_a_finished_stage_made_with_other_arguments(tiny_models, tmp_path):
    from data_process.synth import generate

    data = generate(tmp_path / "synth", n_train=4, n_val=2, n_test=2, size=64, seed=3)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), SKIP_STAGE1="1", MODEL=str(tiny_models["qwen2_vl"]),
               TRAIN_DATA=str(data["train"]), OUTPUT_DIR=str(tmp_path / "run"),
               COMMON_ARGS="--per_device_train_batch_size 2 --save_strategy no --seed 0 --dataloader_num_workers 0 "
                           "--disable_tqdm true",
               STAGE2_ARGS="--max_steps 1")

    def run(**extra):
        return subprocess.run(["bash", "scripts/two_stage.sh"], cwd=ROOT, env=dict(env, **extra), capture_output=True,
                              text=True, timeout=600)

    first = run()
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    done_at = (tmp_path / "run" / "stage2" / "STAGE_DONE").stat().st_mtime_ns
    again = run()
    assert again.returncode == 0 and "stage 2 already done" in again.stdout
    changed = run(STAGE2_ARGS="--max_steps 2")
    assert changed.returncode != 0 and "already done" not in changed.stdout
    assert (tmp_path / "run" / "stage2" / "STAGE_DONE").stat().st_mtime_ns == done_at
    assert "was: --max_steps 1; now: --max_steps 2" in changed.stderr and "REDO_CHANGED=1" in changed.stderr, \
        changed.stderr
    redo = run(STAGE2_ARGS="--max_steps 2", REDO_CHANGED="1")
    assert redo.returncode == 0, redo.stdout[-2000:] + redo.stderr[-2000:]
    assert (tmp_path / "run" / "stage2" / "STAGE_DONE").stat().st_mtime_ns != done_at
    assert list((tmp_path / "run").glob("stage2.replaced-*")), "the old stage 2 output was not kept aside"
    assert "--max_steps 2\n" in (tmp_path / "run" / "stage2" / "stage_args.txt").read_text()
