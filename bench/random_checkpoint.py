"""A full-size Qwen-VL architecture with random weights, saved as a checkpoint the product loads like a real one.

Speed does not depend on weight values, and no weights can reach the GPU machine, so benchmarks and multi-GPU runs
build the architecture from bench/configs/*.json. The tokenizer is the tiny-model BPE (its ids all fall inside the
full vocabulary), so the LM head still has the real 152k rows.

    python -m bench.random_checkpoint --config bench/configs/qwen2_vl_2b.json --out /tmp/qwen2vl2b --dtype bfloat16
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def build_in_memory(config_path: str, dtype: str = "bfloat16", max_pixels: int = 602112, device: str = "cpu",
                    attn_implementation: str | None = None):
    """(model, tokenizer, image processor) of the architecture in `config_path`, random weights (seed 0)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from train.tiny_model import build_tokenizer

    cfg = json.loads(Path(config_path).read_text())
    cfg.pop("_source", None)
    tok = build_tokenizer()
    ids = {k: tok.convert_tokens_to_ids(t) for k, t in [("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
           ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg, **ids)
    config.text_config.pad_token_id, config.text_config.eos_token_id = tok.pad_token_id, tok.eos_token_id
    config.text_config.bos_token_id = None
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=getattr(torch, dtype),
                                                        attn_implementation=attn_implementation)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    patch = config.vision_config.patch_size
    improc = Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2, min_pixels=3136,
                                      max_pixels=max_pixels)
    return model, tok, improc


def build(config_path: str, out: str, dtype: str = "bfloat16", max_pixels: int = 602112, device: str = "cpu") -> Path:
    from train.tiny_model import CHAT_TEMPLATE

    model, tok, improc = build_in_memory(config_path, dtype, max_pixels, device)
    out_dir = Path(out)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    improc.save_pretrained(out_dir)
    (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return out_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--max_pixels", type=int, default=602112)
    p.add_argument("--device", default="cpu", help="where to initialise (cuda is much faster for 7B)")
    a = p.parse_args(argv)
    print(f"random {a.config} checkpoint written to {build(a.config, a.out, a.dtype, a.max_pixels, a.device)}")


if __name__ == "__main__":
    main()
