"""liger-kernel's fused RMSNorm and SwiGLU inside this project's training path (`--liger_kernels`, CUDA only).

What is patched, on the loaded model instance (nothing global beyond what liger's own function does):
  * the LLM's RMSNorms (and Qwen3-VL's q/k norms) -> one Triton kernel each way instead of ~6 elementwise ops;
  * the LLM's MLP -> liger's SwiGLU: silu(gate) * up fused, its input kept instead of the product (less memory).
    PEFT's LoRA wrappers on gate/up/down stay: liger's MLP calls self.gate_proj etc., whatever they are;
  * Qwen2-VL's ViT LayerNorms (liger's default for that family).
  For Qwen3-VL liger 0.8.5 patches only the norms (q/k norms included): its function takes `swiglu` and ignores it.
Left off on purpose:
  * liger's RoPE: transformers 5 mixes the mRoPE sections inside the rotary embedding, so the function liger
    replaces (`apply_multimodal_rotary_pos_emb`) no longer exists; patching it would change nothing;
  * liger's (fused linear) cross-entropy: the project's chunked loss (train/chunked_loss.py) already avoids full logits and
    is the one tested equal to the padded loss.
Exactness: liger's kernels are Triton, so there is no CPU test; `python -m bench.train_throughput ... b_liger`
compares loss and LoRA gradients with and without the patch on the same weights and batch (bench/RESULTS.md).
"""
from __future__ import annotations

import importlib

import torch


class LigerUnavailable(RuntimeError):
    """--liger_kernels cannot run here (no GPU, no liger-kernel, or no liger function for this model type)."""


def apply_liger(model) -> str:
    """Patch `model` (before PEFT wrapping or after: the patched modules' children are untouched). Returns the name
    of liger's function used. One-line errors when liger, Triton or a GPU is missing, or the family is unknown."""
    if not torch.cuda.is_available():
        raise LigerUnavailable("--liger_kernels needs a CUDA GPU (liger-kernel's kernels are Triton)")
    try:  # optional dependency, imported only when asked for (it imports Triton)
        patches = importlib.import_module("liger_kernel.transformers.monkey_patch")
    except ImportError as e:
        raise LigerUnavailable(f"--liger_kernels needs liger-kernel (pip install liger-kernel): {e}") from None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    model_type = base.config.model_type
    # liger names its functions after transformers' model_type, so this is no family branch of our own.
    name = f"apply_liger_kernel_to_{model_type}"
    fn = getattr(patches, name, None)
    if fn is None:
        raise LigerUnavailable(f"--liger_kernels: liger-kernel {_version()} has no {name} for model_type {model_type!r}")
    fn(rope=False, cross_entropy=False, fused_linear_cross_entropy=False, rms_norm=True, swiglu=True, model=base)
    return name


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("liger-kernel")
    except PackageNotFoundError:
        return "(not installed)"
