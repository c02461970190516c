"""An adapter is checked against its base before PEFT loads it (issue #19 item 3): another family, or shapes that
do not fit, are refused in one line naming both; a matching pair still loads."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForImageTextToText

from medvl.adapter_check import AdapterMismatch, check_adapter_fits
from medvl.families import get_family
from eval.model_spec import ModelSpec, load_spec
from train.merge_lora import merge
from train.tiny_model import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def _make_adapter(base: Path, out: Path, family: str | None, **lora) -> Path:
    """A LoRA adapter on `base` saved by PEFT, plus the run_summary.json train.finetune writes (family=None: none)."""
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, **lora)
    get_peft_model(model, cfg).save_pretrained(out)
    if family:
        (out / "run_summary.json").write_text(json.dumps({"family": family, "base": str(base)}))
    return out


@pytest.fixture(scope="module")
def adapters(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    q2 = tiny_models["qwen2_vl"]
    return {"q2": _make_adapter(q2, root / "q2", "qwen2_vl"),
            "q2_peft_only": _make_adapter(q2, root / "q2_peft_only", None),
            "q2_lm_head": _make_adapter(q2, root / "q2_lm_head", "qwen2_vl", modules_to_save=["lm_head"])}


@pytest.fixture(scope="module")
def narrow_q2(tmp_path_factory):
    """A second tiny Qwen2-VL, hidden size 32 instead of 64: same family, other shapes."""
    return build_tiny_model("qwen2_vl", tmp_path_factory.mktemp("narrow") / "q2_h32", hidden=32)


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_other_family_refused_by_load_spec(tiny_models, adapters):
    base, ad = tiny_models["qwen2_5_vl"], adapters["q2"]
    with pytest.raises(AdapterMismatch) as e:
        load_spec(ModelSpec.parse(f"m={base}+{ad}"), dtype="float32")
    assert _one_line(e) == (f"adapter {ad} was trained on qwen2_vl ({tiny_models['qwen2_vl']}) but the base {base} "
                            f"is qwen2_5_vl")


def test_other_family_without_run_summary_refused_by_class(tiny_models, adapters):
    """A PEFT-only adapter: the base class PEFT recorded in adapter_config.json tells the family apart."""
    base, ad = tiny_models["qwen2_5_vl"], adapters["q2_peft_only"]
    with pytest.raises(AdapterMismatch) as e:
        load_spec(ModelSpec.parse(f"m={base}+{ad}"), dtype="float32")
    assert _one_line(e) == (f"adapter {ad} was trained on Qwen2VLForConditionalGeneration ({tiny_models['qwen2_vl']}) "
                            f"but the base {base} is Qwen2_5_VLForConditionalGeneration (qwen2_5_vl)")


def test_matching_pair_loads_and_merges(tiny_models, adapters):
    base = tiny_models["qwen2_vl"]
    plain, _, _ = load_spec(ModelSpec.parse(f"m={base}"), dtype="float32")
    for ad in ("q2", "q2_peft_only", "q2_lm_head"):
        model, _, fam = load_spec(ModelSpec.parse(f"m={base}+{adapters[ad]}"), dtype="float32")
        assert fam.name == "qwen2_vl"
        q = "model.language_model.layers.0.self_attn.q_proj.weight"
        assert not torch.equal(model.state_dict()[q], plain.state_dict()[q])  # the adapter was merged in


def test_shape_mismatch_named(tiny_models, adapters, narrow_q2):
    model = AutoModelForImageTextToText.from_pretrained(narrow_q2, dtype=torch.float32)
    ad = adapters["q2"]
    with pytest.raises(AdapterMismatch) as e:
        check_adapter_fits(model, ad, str(narrow_q2), get_family("qwen2_vl"))
    msg = _one_line(e)
    assert msg.startswith(f"adapter {ad} does not fit base {narrow_q2}: model.language_model.layers.0.self_attn."
                          f"q_proj expects in_features 32, the adapter has 64 (trained on {tiny_models['qwen2_vl']})")
    assert msg.endswith("more)")
    with pytest.raises(AdapterMismatch, match="lm_head.weight expects shape .472, 32., the adapter has .472, 64."):
        # the fully saved lm_head is compared too (first LoRA key sorts after it)
        check_adapter_fits(model, adapters["q2_lm_head"], str(narrow_q2), get_family("qwen2_vl"))


def test_shape_mismatch_refused_by_load_spec_not_28_lines(adapters, narrow_q2):
    with pytest.raises(AdapterMismatch, match="expects in_features 32, the adapter has 64"):
        load_spec(ModelSpec.parse(f"m={narrow_q2}+{adapters['q2']}"), dtype="float32")


def test_merge_refuses_before_writing(tiny_models, adapters, tmp_path):
    with pytest.raises(AdapterMismatch, match="was trained on qwen2_vl"):
        merge(str(tiny_models["qwen2_5_vl"]), str(adapters["q2"]), str(tmp_path / "merged"))
    assert not (tmp_path / "merged").exists() and not (tmp_path / "merged.tmp").exists()
    not_adapter = tmp_path / "not_adapter"
    not_adapter.mkdir()
    with pytest.raises(AdapterMismatch, match="holds no adapter_config.json: not an adapter folder"):
        merge(str(tiny_models["qwen2_vl"]), str(not_adapter), str(tmp_path / "merged"))


def test_merge_entry_point_one_line(tiny_models, adapters, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "train.merge_lora", "--model_name_or_path", str(tiny_models["qwen2_5_vl"]),
                        "--adapter", str(adapters["q2"]), "--output_dir", str(tmp_path / "merged")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    # the base loads first (its progress bar); then one line, no traceback, no PEFT size-mismatch list
    lines = [l for l in p.stderr.splitlines() if l.strip() and not l.startswith(("Loading weights", "merge_lora: ["))]
    assert "merge_lora: [1/5] loading the base" in p.stderr  # the merge says what it is doing
    assert p.returncode == 1 and "Traceback" not in p.stderr and "size mismatch" not in p.stderr, p.stderr
    assert lines == [f"error: adapter {adapters['q2']} was trained on qwen2_vl ({tiny_models['qwen2_vl']}) but the "
                     f"base {tiny_models['qwen2_5_vl']} is qwen2_5_vl"], p.stderr
