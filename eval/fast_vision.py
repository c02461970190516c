"""Inference speed of the vision tower, the largest GPU cost of short-answer evaluation (measured: ~45% of the
GPU time for 8-token answers on 448-560 px images, bench/RESULTS.md).

- varlen attention: all images of a batch in one attention call per layer (medvl/varlen_attention.py), on CUDA.
- compile (opt-in, `--compile_vision`): torch.compile of each vision block, with dynamic shapes (every batch has a
  different patch count). It fuses the many elementwise steps (norms, activation, fp32 rotary) between the
  matmuls. The first batches pay the compile (tens of seconds); fused kernels round bf16 differently from the
  eager ones, so answers can differ from an uncompiled run in the last place: off by default.
"""
from __future__ import annotations

from medvl.families import family_of
from medvl.varlen_attention import use_varlen_vision


def prepare_vision(model, compile: bool = False) -> dict:
    """Apply the fast vision paths this machine supports; returns what was applied (recorded in run_info)."""
    family = family_of(model)
    if family is None:
        return {"attention": None, "compiled": False}
    visual = family.vision_tower(model)
    use_varlen_vision(model)
    if compile:
        for block in family.vision_blocks(model):
            block.compile(dynamic=True)
    return {"attention": visual.config._attn_implementation, "compiled": bool(compile)}
