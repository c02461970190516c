"""A speed lever under trial (issue 21, goal 2): torch.compile of the LLM's decoder layers, one layer at a time
("regional" compilation: the 28 identical layers share one compiled graph, so compile time stays that of one layer).

Bench-only (train_throughput's `b_compile` variant): tests/test_bench_compile.py checks on CPU (fp32) that losses and
LoRA gradients equal eager ones, but on the H200 (bf16) the per-step losses split from eager after the first update
even with dropout 0 (bench/RESULTS.md, issue 21), so it does not go into train/ until that is explained.
Attention stays what the model registered (medvl_varlen on packed rows); a custom kernel dynamo cannot trace is a
graph break, not a wrong result.
"""
from __future__ import annotations

import torch


def decoder_layers(model) -> torch.nn.ModuleList:
    """The LLM's decoder layers (…language_model.layers), through any PEFT wrapper."""
    for name, module in model.named_modules():
        if name.endswith("language_model.layers") and isinstance(module, torch.nn.ModuleList):
            return module
    raise ValueError("no language_model.layers in this model: cannot compile its decoder layers")


def compile_decoder_layers(model, dynamic: bool = True) -> int:
    """Compile each decoder layer in place (nn.Module.compile keeps names, parameters and state-dict keys);
    dynamic shapes because packed rows change length every step. Returns the number of layers compiled."""
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=dynamic)
    return len(layers)
