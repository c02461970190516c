"""Model specs for evaluation: `name=CHECKPOINT[+ADAPTER[+ADAPTER...]]`.

    base=Qwen/Qwen2-VL-2B-Instruct                       the base model
    stage1=Qwen/Qwen2-VL-2B-Instruct+out/stage1          base + Stage-1 adapter
    stage2=Qwen/Qwen2-VL-2B-Instruct+out/stage1+out/stage2   base + Stage-1 + Stage-2 adapters (each merged in order)
    merged=out/stage2_merged                             a merged checkpoint

Adapters are merged one after another, exactly as training stacked them (Stage 2 trains on the Stage-1-merged model).
The processor (image resizing, chat template) comes from the last adapter dir that has one, else the checkpoint:
evaluation resizes images exactly as the run that produced the adapter did.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoConfig

from medvl.adapter_check import check_adapter_fits
from medvl.checkpoint_path import resolve_checkpoint
from medvl.encoding import DEFAULT_SYSTEM
from medvl.families import get_family
from medvl.loading import load_model_and_processor, load_processor, pixel_budget
from eval.fast_vision import prepare_vision
from eval.output_dir import weights_identity
from eval.prompt_batches import EncoderPool


@dataclass(frozen=True)
class ModelSpec:
    name: str
    checkpoint: str
    adapters: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        if "=" not in text:
            raise ValueError(f"model spec {text!r} must look like name=CHECKPOINT[+ADAPTER...]")
        name, rest = text.split("=", 1)
        parts = [p.strip() for p in rest.split("+") if p.strip()]
        if not name.strip() or not parts:
            raise ValueError(f"model spec {text!r} must look like name=CHECKPOINT[+ADAPTER...]")
        for a in parts[1:]:
            if not (Path(a) / "adapter_config.json").exists():
                raise ValueError(f"model spec {name}: {a} is not an adapter dir (no adapter_config.json)")
        return cls(name.strip(), parts[0], tuple(parts[1:]))

    @property
    def processor_source(self) -> str:
        for a in reversed(self.adapters):
            if (Path(a) / "preprocessor_config.json").exists() and (Path(a) / "tokenizer_config.json").exists():
                return a
        return self.checkpoint


def load_spec_processor(spec: ModelSpec, **processor_kw):
    """(VLProcessor, family) of a spec without its weights: cheap, so encoding can start before the model loads.
    The same processor load_spec returns."""
    family = get_family(AutoConfig.from_pretrained(resolve_checkpoint(spec.checkpoint)))
    return load_processor(spec.processor_source, family, **processor_kw), family


def load_spec(spec: ModelSpec, dtype="auto", device: str | None = None, compile_vision: bool = False,
              **processor_kw):
    """(model in eval mode, VLProcessor, family) for a spec; adapters merged in order; the vision tower's fast
    inference paths applied (eval/fast_vision.py; `model.vision_speed` says which)."""
    model, processor, family = load_model_and_processor(spec.checkpoint, dtype=dtype, **processor_kw)
    for a in spec.adapters:
        check_adapter_fits(model, a, spec.checkpoint, family)  # one line, not PEFT's silence or size mismatches
        model = PeftModel.from_pretrained(model, a).merge_and_unload()
    if spec.processor_source != spec.checkpoint:
        pix = {k: processor_kw[k] for k in ("min_pixels", "max_pixels") if processor_kw.get(k) is not None}
        rest = {k: v for k, v in processor_kw.items() if k not in ("min_pixels", "max_pixels")}
        processor = load_processor(spec.processor_source, family, **pix, **rest)
    if device:
        model = model.to(device)
    model.vision_speed = prepare_vision(model, compile_vision)
    return model.eval(), processor, family


def load_spec_with_encoders(spec: ModelSpec, num_workers: int | None = None, dtype="auto", device: str | None = None,
                            compile_vision: bool = False, before_load=None, **processor_kw):
    """(EncoderPool, (model, processor, family)): the encoding workers start first, since they fork fast from a
    process that holds no weights yet (eval/prompt_batches.py), then the model loads. `before_load(processor)` runs
    before either (a check that may refuse the run costs no model load)."""
    processor = load_spec_processor(spec, **processor_kw)[0]
    if before_load is not None:
        before_load(processor)
    pool = EncoderPool(processor, num_workers)
    try:
        return pool, load_spec(spec, dtype=dtype, device=device, compile_vision=compile_vision, **processor_kw)
    except BaseException:
        pool.close()
        raise


def context_length(checkpoint: str) -> int:
    """The model's context length in tokens (`max_position_embeddings` of its text config)."""
    cfg = AutoConfig.from_pretrained(resolve_checkpoint(checkpoint))
    for c in (getattr(cfg, "text_config", None), cfg):
        if getattr(c, "max_position_embeddings", None):
            return int(c.max_position_embeddings)
    raise ValueError(f"{checkpoint}: its config has no max_position_embeddings; pass --max_len")


def prompt_limit(spec: ModelSpec, max_len: int | None, reserve: int = 0) -> tuple[int, str]:
    """(longest encoding allowed, where that number comes from): --max_len, else the context length less
    `reserve` (the tokens generation will add). A longer record is a named per-record failure (over_length)."""
    if max_len is not None:
        return max_len, "--max_len"
    n = context_length(spec.checkpoint)
    if n - reserve <= 0:
        raise ValueError(f"{spec.name}: context length {n} leaves no room for {reserve} new tokens")
    return n - reserve, f"max_position_embeddings {n}" + (f" - max_new_tokens {reserve}" if reserve else "")


def fingerprint(spec: ModelSpec, processor, system_prompt, dtype) -> dict:
    """What a spec's outputs depend on besides the records: weights, pixel budget, prompt, dtype (compared on
    reruns by eval/output_dir.py; generation adds its decoding settings)."""
    lo, hi = pixel_budget(processor.image_processor)
    template = processor.tokenizer.chat_template or ""
    return {"checkpoint": weights_identity(spec.checkpoint), "adapters": [weights_identity(a) for a in spec.adapters],
            "pixel_budget": {"min_pixels": lo, "max_pixels": hi},
            "system_prompt": None if system_prompt is DEFAULT_SYSTEM else system_prompt,
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(), "dtype": str(dtype)}


def system_prompt_from_args(parser, args):
    """--prompt_mode default: the chat template's own system turn; custom: the text of --system_prompt_file."""
    if args.prompt_mode != "custom":
        return DEFAULT_SYSTEM
    if not args.system_prompt_file:
        parser.error("--prompt_mode custom needs --system_prompt_file")
    return Path(args.system_prompt_file).read_text().strip()


def add_model_arguments(p) -> None:
    """The options every per-model eval entry point shares (generation, perplexity)."""
    p.add_argument("--model", action="append", required=True, help="name=CHECKPOINT[+ADAPTER...] (repeatable)")
    p.add_argument("--test_data", required=True)
    p.add_argument("--output_dir", "--out_dir", dest="out_dir", default="result/predictions",
                   help="folder of <model>/predictions.jsonl, run_info.json and perplexity.json")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--num_workers", type=int, default=None,
                   help="encoding processes that run ahead of the GPU (default: cores - 1, at most 8; 0: inline)")
    p.add_argument("--compile_vision", action="store_true",
                   help="torch.compile the vision blocks (faster on GPU after a compile of tens of seconds; bf16 "
                        "rounding differs from eager, so answers may differ in rare near-ties)")
    p.add_argument("--prompt_mode", choices=["default", "custom"], default="default",
                   help="default: the model's own system prompt; custom: --system_prompt_file")
    p.add_argument("--system_prompt_file", default=None)
    p.add_argument("--min_pixels", type=int, default=None, help="default: the value the checkpoint/adapter saved")
    p.add_argument("--max_pixels", type=int, default=None, help="default: the value the checkpoint/adapter saved")
    p.add_argument("--max_len", type=int, default=None,
                   help="longest prompt in tokens (default: the model's context length, less max_new_tokens when "
                        "generating); a longer record is listed as failed (over_length) and the run goes on")
    p.add_argument("--overwrite", action="store_true",
                   help="remove this model's earlier predictions/perplexity first (a rerun with other settings is "
                        "refused otherwise: outputs are never mixed)")
