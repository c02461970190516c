"""Build a tiny, config-built Qwen-VL checkpoint (random weights + a locally trained BPE tokenizer).

Tests and the demo use these instead of hub downloads; they are saved with `save_pretrained` and loaded back
through the same `load_model_and_processor` as a real checkpoint.

    python -m train.tiny_model --family qwen2_vl --output_dir /tmp/tiny-qwen2vl     # --out / --out_dir: the same
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

# The Qwen special tokens, in the order the real vocabularies place them after the BPE merges.
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# Qwen2-VL's chat template: default system turn, images as <|vision_start|><|image_pad|><|vision_end|>.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}{% set image_count.value = image_count.value + 1 %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2's pre-tokenisation regex (contractions, letters, single digits, punctuation runs, spaces).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

_CORPUS = """You are a helpful assistant. Describe the image. Is there a lesion? yes no. What is the imaging modality?
CT MRI X-ray ultrasound. Is the lesion on the left or the right? left right upper lower centre center.
Describe the finding. lesion in the upper left, lesion in the lower right, no lesion. Locate the lesion.
Is there a fracture? Which organ is abnormal? liver lung heart kidney brain spleen chest abdomen head.
A CT image with a lesion. An MRI image. An X-ray image without a lesion. The answer is. bbox_2d label
{"bbox_2d": [12, 34, 56, 78], "label": "lesion"} (123,456),(789,999) 0 1 2 3 4 5 6 7 8 9 , . : ; ? ! [ ] { } ( ) " '
"""


def build_tokenizer(vocab_size: int = 600):
    """A byte-level BPE with the Qwen split regex and special tokens, wrapped as Qwen2TokenizerFast."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = Qwen2TokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                              unk_token=None, bos_token=None, errors="replace")
    fast.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    fast.add_tokens(["<|endoftext|>"], special_tokens=True)
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 32768
    return fast


def _config(family: str, tok, hidden: int, layers: int):
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    heads, kv = 4, 2
    head_dim = hidden // heads
    rope = {"rope_type": "default", "mrope_section": [head_dim // 8, head_dim // 8 * 3 // 2, head_dim // 8 * 3 // 2]}
    rope["mrope_section"][0] = head_dim // 2 - sum(rope["mrope_section"][1:])  # sections must sum to head_dim / 2
    text = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
                rope_theta=10000.0, rope_scaling=dict(rope, type="mrope"), rope_parameters=dict(rope, rope_theta=10000.0),
                tie_word_embeddings=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                bos_token_id=None, initializer_range=0.1)  # wider init: a frozen random lm_head can still separate tokens
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig
        vision = dict(depth=2, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, in_chans=3)
        return Qwen2VLConfig(text_config=text, vision_config=vision, **ids, tie_word_embeddings=False, bos_token_id=None), 14
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[1], in_chans=3)
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids, tie_word_embeddings=False, bos_token_id=None), 14
    if family == "qwen3_vl":
        from transformers import Qwen3VLConfig
        text.update(head_dim=head_dim)
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                      patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                      deepstack_visual_indexes=[0], in_channels=3)
        return Qwen3VLConfig(text_config=text, vision_config=vision, **ids, tie_word_embeddings=False), 16
    raise ValueError(f"unknown family {family!r}")


def build_tiny_model(family: str, out_dir: str | Path, hidden: int = 64, layers: int = 2, seed: int = 0,
                     min_pixels: int = 56 * 56, max_pixels: int = 112 * 112) -> Path:
    """Write a random-weight checkpoint + tokenizer + image processor to out_dir and return it."""
    import torch
    from transformers import AutoModelForImageTextToText, Qwen2VLImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    config, patch = _config(family, tok, hidden, layers)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    factor = patch * 2
    improc = Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2,
                                      min_pixels=max(min_pixels, factor * factor), max_pixels=max_pixels)
    improc.save_pretrained(out)
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    with open(out / "tiny_model.json", "w") as f:
        json.dump({"family": family, "hidden": hidden, "layers": layers, "seed": seed}, f)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.tiny_model", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", required=True, choices=["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
    p.add_argument("--output_dir", "--out_dir", "--out", dest="out", required=True, help="checkpoint dir to write")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max_pixels", type=int, default=112 * 112)
    a = p.parse_args(argv)
    out = build_tiny_model(a.family, a.out, a.hidden, a.layers, a.seed, max_pixels=a.max_pixels)
    print(f"tiny {a.family} checkpoint written to {out}")


if __name__ == "__main__":
    main()
