"""QLoRA bases: the LLM loaded in 4-bit (NF4, double quantization, 16-bit compute) or 8-bit through bitsandbytes.

The vision tower and merger stay 16-bit unless asked (--quantize_vision): they are small next to the LLM, and the
merger is what Stage 1 trains. Which modules those are comes from the registry, resolved on a weightless (meta-device)
skeleton of the model, and passed to transformers by full name; after loading, `check_quantized` proves the LLM's
linears are quantized and the tower's are not.

peft's prepare_model_for_kbit_training is deliberately not used: it upcasts every non-quantized weight to fp32 (the
16-bit ViT, embeddings and LM head would double in size) and enables input gradients, which only reentrant gradient
checkpointing needs (we use the non-reentrant kind) and which would build a graph into the frozen towers.

A QLoRA adapter merges into a 16-bit copy of the base (train/merge_lora.py loads the base unquantized); the merged
model then differs from the trained one by the base's quantization error, which merge_lora measures and reports.
"""
from __future__ import annotations

import re

from medvl.families import ModelFamily


def require_bitsandbytes():
    try:
        import bitsandbytes
    except ImportError as e:
        raise ImportError("--quantization 4bit|8bit and the 8-bit / paged optimizers need bitsandbytes: "
                          "pip install bitsandbytes (its wheel carries CUDA and CPU kernels)") from e
    return bitsandbytes


def kept_16bit_modules(config, family: ModelFamily, quantize_vision: bool = False) -> list[str]:
    """Full names of the linear layers that must not be quantized: the vision tower's (unless asked) and the LM head."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        skeleton = AutoModelForImageTextToText.from_config(config)
    linears = [n for n, m in skeleton.named_modules() if isinstance(m, torch.nn.Linear)]
    keep = [] if quantize_vision else [n for n in linears if re.search(family.vision_regex, n)]
    head = skeleton.get_output_embeddings()
    keep += [n for n, m in skeleton.named_modules() if m is head]
    if not quantize_vision and not any(re.search(family.vision_regex, n) for n in keep):
        raise ValueError(f"no vision-tower linear found by the {family.name} registry pattern "
                         f"{family.vision_regex!r}; cannot keep the tower 16-bit")
    return keep


def bnb_config(kind: str, compute_dtype, skip_modules: list[str]):
    """The BitsAndBytesConfig for '4bit' (QLoRA recipe: NF4 + double quantization) or '8bit' (LLM.int8)."""
    from transformers import BitsAndBytesConfig

    require_bitsandbytes()
    if kind == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=skip_modules)
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules)
    raise ValueError(f"quantization must be 4bit or 8bit, got {kind!r}")


def compute_dtype_for(dtype):
    """4-bit matmuls run in the model's 16-bit dtype (bf16 on GPUs); a float32 model (CPU tests) computes in float32."""
    import torch

    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32


def is_quantized_linear(module) -> bool:
    return type(module).__name__ in ("Linear4bit", "Linear8bitLt")


def check_quantized(model, family: ModelFamily, quantize_vision: bool = False) -> dict[str, int]:
    """Fail loudly when the quantization did not land where asked (module paths differ between library versions)."""
    counts = {"llm_quantized": 0, "llm_linear": 0, "vision_quantized": 0, "vision_linear": 0}
    for name, m in model.named_modules():
        part = "vision" if re.search(family.vision_regex, name) else "llm" if re.search(family.llm_full_regex, name) else None
        if part and (is_quantized_linear(m) or type(m).__name__ == "Linear"):
            counts[f"{part}_linear"] += 1
            counts[f"{part}_quantized"] += is_quantized_linear(m)
    if counts["llm_quantized"] == 0:
        raise RuntimeError(f"quantization left every LLM linear unquantized: {counts}")
    if not quantize_vision and counts["vision_quantized"]:
        raise RuntimeError(f"the vision tower was to stay 16-bit but {counts['vision_quantized']} of its linears "
                           f"were quantized (llm_int8_skip_modules did not match): {counts}")
    return counts
