"""Causal-LM cross-entropy without materialising the full vocabulary logits.

Qwen-VL's vocabulary is ~152k: logits for a 16k-token packed row are 4.9 GB in bf16 and twice that once upcast for the
loss. In VQA only the answer tokens carry labels (~10% of tokens), so: keep the hidden states of the positions whose
next token is labelled, project them through the LM head a chunk at a time in fp32 math, and recompute each chunk's
logits in backward (activation checkpointing) instead of storing them. Same value as
`F.cross_entropy(lm_head(h).float(), labels)`; memory O(chunk x vocab).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from medvl.encoding import IGNORE_INDEX


def labelled_positions(hidden: torch.Tensor, labels: torch.Tensor):
    """Hidden states (N, H) that predict a label, and those labels (N,), with the one-token causal shift."""
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    y = labels[:, 1:].reshape(-1)
    keep = (y != IGNORE_INDEX).nonzero(as_tuple=True)[0]
    return h.index_select(0, keep), y.index_select(0, keep)


def _chunk_nll_sum(h: torch.Tensor, y: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
    # Accelerate returns a mixed-precision model's outputs upcast to fp32; the head computes in its own dtype.
    return F.cross_entropy(head(h.to(head.weight.dtype)).float(), y, reduction="sum")


def chunked_nll_sum(h: torch.Tensor, y: torch.Tensor, head: torch.nn.Module, chunk: int = 4096) -> torch.Tensor:
    """Σ −log p(y | h) over rows, `chunk` rows of logits alive at a time (recomputed in backward)."""
    if h.shape[0] == 0:
        return h.sum() * 0.0  # keeps the graph (and DDP's hooks) alive on a batch without labels
    total = None
    for s in range(0, h.shape[0], chunk):
        hs, ys = h[s:s + chunk], y[s:s + chunk]
        part = (checkpoint(_chunk_nll_sum, hs, ys, head, use_reentrant=False) if torch.is_grad_enabled()
                else _chunk_nll_sum(hs, ys, head))
        total = part if total is None else total + part
    return total
