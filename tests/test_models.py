"""Registry: module patterns and accessors against real (tiny) models, box formats both ways, loader."""
import re

import pytest
import torch.nn as nn
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig

from tests.conftest import FAMILIES, qa_record, write_image
from medvl.collate import VLCollator
from medvl.loading import load_model_and_processor
from medvl.families import (FAMILIES as REG, box_to_text, family_of, get_family, parse_boxes, resolve_modules,
                            vision_tower)

# The transformers classes each family's accessors must land on (tower, merger), and its box text.
REAL = {
    "qwen2_vl": ("Qwen2VisionTransformerPretrainedModel", "PatchMerger", "<|box_start|>"),
    "qwen2_5_vl": ("Qwen2_5_VisionTransformerPretrainedModel", "Qwen2_5_VLPatchMerger", '{"bbox_2d": '),
    "qwen3_vl": ("Qwen3VLVisionModel", "Qwen3VLVisionPatchMerger", '{"bbox_2d": '),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_reload_and_forward_with_image(family, tiny_models, tmp_path):
    model, proc, fam = load_model_and_processor(str(tiny_models[family]))
    assert fam.name == family
    enc = proc.encode(qa_record("a", write_image(tmp_path / "x.png")))
    batch = VLCollator(proc.pad_token_id, proc.image_token_id)([enc])
    out = model(**batch)
    assert out.loss is not None and out.loss.item() > 0
    assert int((batch["input_ids"] == proc.image_token_id).sum()) == int(enc.image_grid_thw.prod()) // 4


@pytest.mark.parametrize("family", FAMILIES)
def test_patterns_hit_the_right_towers(family, tiny_models):
    model, _, fam = load_model_and_processor(str(tiny_models[family]))
    merger = resolve_modules(model, fam.merger_regex, "merger")
    assert merger and all(".visual." in n and "merger" in n for n in merger)
    if family == "qwen3_vl":
        assert any("deepstack_merger_list" in n for n in merger)
        assert not any(".blocks." in n for n in merger), "vision block MLPs share the linear_fc names"
    llm = resolve_modules(model, fam.llm_regex(["attn", "ffn"]), "LLM")
    assert llm and all("language_model" in n and "visual" not in n for n in llm)
    assert len(llm) == 2 * 7  # 2 layers x (q,k,v,o,gate,up,down)
    attn = resolve_modules(model, fam.llm_regex(["attn"]), "LLM")
    assert all(re.search(r"self_attn\.(q|k|v|o)_proj$", n) for n in attn) and len(attn) == 8
    # a bare suffix list would also hit Qwen2.5-VL's vision MLP: ours must not
    bare = [n for n, _ in model.named_modules() if n.endswith(("gate_proj", "up_proj", "down_proj"))]
    if family == "qwen2_5_vl":
        assert any("visual" in n for n in bare)


def test_pattern_that_matches_nothing_fails_clearly(tiny_models):
    model, _, _ = load_model_and_processor(str(tiny_models["qwen2_vl"]))
    with pytest.raises(ValueError, match="no module of the loaded model matches the merger pattern"):
        resolve_modules(model, r"(^|\.)vision_tower\.projector$", "merger")
    with pytest.raises(ValueError, match="lora_targets"):
        REG["qwen2_vl"].llm_regex(["mlp"])


def test_family_detection_and_mismatch(tiny_models):
    assert get_family(AutoConfig.from_pretrained(tiny_models["qwen3_vl"])).name == "qwen3_vl"
    with pytest.raises(ValueError, match="not qwen2_vl"):
        load_model_and_processor(str(tiny_models["qwen3_vl"]), family="qwen2_vl")
    with pytest.raises(ValueError, match="unknown model family"):
        get_family("llava")


@pytest.mark.parametrize("family", FAMILIES)
def test_box_round_trip(family):
    fam = REG[family]
    orig, inp = (640, 480), (644, 476)
    box = [100.0, 50.0, 300.0, 400.0]
    text = box_to_text(fam, box, orig, inp, "liver")
    (label, back), = parse_boxes(fam, text, orig, inp)
    assert label == "liver"
    tol = 1.0 if fam.box_format == "json_abs" else max(orig) / 1000 + 1e-6
    assert all(abs(a - b) <= tol for a, b in zip(back, box)), (text, back)


def test_box_formats_are_the_documented_ones():
    orig, inp = (1000, 500), (1008, 504)
    assert box_to_text(REG["qwen2_vl"], [100, 50, 500, 250], orig, inp) == "<|box_start|>(100,100),(500,500)<|box_end|>"
    assert box_to_text(REG["qwen2_5_vl"], [100, 50, 500, 250], orig, inp) == '{"bbox_2d": [101, 50, 504, 252]}'
    assert box_to_text(REG["qwen3_vl"], [100, 50, 500, 250], orig, inp, "x") == '{"bbox_2d": [100, 100, 500, 500], "label": "x"}'
    # Mixing formats is the classic ~0 IoU bug: the same text means different pixels per family.
    t = '{"bbox_2d": [100, 100, 500, 500]}'
    assert parse_boxes(REG["qwen2_5_vl"], t, orig, inp)[0][1] != parse_boxes(REG["qwen3_vl"], t, orig, inp)[0][1]
    # decoded without special tokens, Qwen2-VL boxes still parse
    assert parse_boxes(REG["qwen2_vl"], "lesion(100,100),(500,500)", orig, inp)[0][1] == [100.0, 50.0, 500.0, 250.0]
    assert parse_boxes(REG["qwen2_vl"], "no box here", orig, inp) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_accessors_find_the_real_vision_modules(family, tiny_models, tmp_path):
    model, proc, fam = load_model_and_processor(str(tiny_models[family]), dtype="float32")
    tower_cls, merger_cls, box_prefix = REAL[family]
    tower = fam.vision_tower(model)
    assert type(tower).__name__ == tower_cls and vision_tower(model) is tower and family_of(model) is fam
    assert type(fam.merger(model)).__name__ == merger_cls and fam.merger(model) is tower.merger
    vcfg = model.config.vision_config
    assert len(fam.vision_blocks(model)) == vcfg.depth
    assert all(any(b is m for m in tower.modules()) for b in fam.vision_blocks(model))
    # the merger's own parameters are what the registry's merger pattern selects (deepstack mergers aside)
    merger_params = {n for n, _ in model.named_parameters() if re.search(fam.merger_block_regex, n)}
    own = {n for n, p in model.named_parameters() if any(p is q for q in fam.merger(model).parameters())}
    assert own and own <= merger_params
    assert fam.deepstack == (family == "qwen3_vl") and fam.supports_vision_cache == (family != "qwen3_vl")
    assert len(fam.deepstack_mergers(model)) == len(getattr(vcfg, "deepstack_visual_indexes", []))
    assert type(fam.deepstack_mergers(model)[0]).__name__ == merger_cls if fam.deepstack else True
    # the merge size the vision cache splits features by is the one the processor counts image tokens with
    merge = fam.spatial_merge_size(model)
    assert merge == vcfg.spatial_merge_size == proc.merge
    enc = proc.encode(qa_record("a", write_image(tmp_path / "x.png")))
    batch = VLCollator(proc.pad_token_id, proc.image_token_id)([enc])
    feats = model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
    feats = getattr(feats, "pooler_output", feats)
    n = sum(f.shape[0] for f in feats) if isinstance(feats, (list, tuple)) else feats.shape[0]
    assert n == int(enc.image_grid_thw.prod()) // merge ** 2
    # box format: the family's text, and back
    orig, inp = (640, 480), (644, 476)
    text = fam.format_box([10, 20, 300, 400], orig, inp, "liver")
    assert text.startswith(box_prefix) or text.startswith("<|object_ref_start|>liver") and box_prefix in text
    assert fam.parse_boxes(text, orig, inp)[0][0] == "liver"
    two = fam.join_boxes([text, text])
    assert len(fam.parse_boxes(two, orig, inp)) == 2 and (two.startswith("[") == (fam.box_format != "qwen2"))
    # wrapped by PEFT, the accessors still land on the same modules
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=resolve_modules(model, fam.merger_regex, "merger")))
    assert fam.vision_tower(peft) is tower and fam.merger(peft) is tower.merger


def test_accessor_on_a_model_without_the_tower_fails_clearly():
    with pytest.raises(ValueError, match="no 'visual' module in the loaded qwen2_vl model"):
        REG["qwen2_vl"].vision_tower(nn.Sequential(nn.Linear(2, 2)))
    assert vision_tower(nn.Linear(2, 2)) is None  # no registered family: no tower
