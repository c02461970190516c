"""Variable-length attention for packed rows, without the flash-attn package.

Registered in transformers' attention interface as `medvl_varlen`. On a packed row (the collator passes
`cu_seq_lens_q/k`, `max_length_q/k`) each sample attends only to itself, causally: on CUDA through PyTorch's own
`torch.nn.attention.varlen.varlen_attn` (flash kernels), elsewhere one SDPA call per sample. Any other call (padded
eval batches, generation, the vision tower's per-image calls) is plain SDPA with the usual mask, so the model stays
correct outside packed training.

The name must not contain "flash": transformers would then look for a flash-attn kernel on the hub.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect

import torch
import torch.nn.functional as F

from medvl.families import vision_tower

NAME = "medvl_varlen"
VISION_NAME = "medvl_flash_vision"  # see use_varlen_vision
_PACKED = contextvars.ContextVar("medvl_packed_forward", default=False)


@contextlib.contextmanager
def packed_forward():
    """While active, the model builds no attention mask: the packed row's boundaries travel as cu_seq_lens instead
    (otherwise transformers would build a dense (T, T) block mask from the position ids, then we would ignore it)."""
    token = _PACKED.set(True)
    try:
        yield
    finally:
        _PACKED.reset(token)


def _mask(*args, **kwargs):
    if _PACKED.get():
        return None
    from transformers.masking_utils import sdpa_mask
    return sdpa_mask(*args, **kwargs)


@functools.lru_cache(maxsize=1)
def _torch_varlen():
    """(varlen_attn, its keyword options) when this torch has it, else None. Its signature moved between releases:
    causal is `window_size=(-1, 0)` in newer ones, `is_causal=True` in older; GQA broadcast only in newer."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    return varlen_attn, {"window_size": "window_size" in params, "enable_gqa": "enable_gqa" in params}


def varlen(q, k, v, cu_seqlens, max_len: int, scale: float, causal: bool = True):
    """Attention within each segment of a packed row (causal, or full for vision patches).
    q (T, Hq, D), k/v (T, Hkv, D) -> (T, Hq, D)."""
    hq, hkv = q.shape[1], k.shape[1]
    fn = _torch_varlen() if q.is_cuda else None
    if fn is not None:
        varlen_attn, has = fn
        kw = {"scale": scale}
        if hq != hkv:
            if has["enable_gqa"]:
                kw["enable_gqa"] = True
            else:  # older torch: broadcast the k/v heads by hand
                k, v = (t.repeat_interleave(hq // hkv, dim=1) for t in (k, v))
        if causal:
            kw.update({"window_size": (-1, 0)} if has["window_size"] else {"is_causal": True})
        return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, **kw)
    # Portable path (CPU, or a torch without varlen_attn): the same math one segment at a time.
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (t[s:e].transpose(0, 1)[None] for t in (q, k, v))
        out[s:e] = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, scale=scale,
                                                  enable_gqa=hq != hkv)[0].transpose(0, 1)
    return out


def varlen_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                             cu_seq_lens_q=None, cu_seq_lens_k=None, max_length_q=None, max_length_k=None, **kwargs):
    """transformers attention-interface function: (1, H, T, D) tensors in, ((1, T, H, D), None) out."""
    # Some transformers releases hand the packed row's kwargs to the vision tower too: its attention is not causal
    # and spans image patches, not the row, so it takes the plain path.
    if cu_seq_lens_q is None or not getattr(module, "is_causal", False):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        kwargs.pop("position_ids", None)
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    if query.shape[0] != 1:
        raise ValueError(f"packed attention expects one packed row, got batch {query.shape[0]}")
    if dropout:
        raise ValueError("packed attention does not support attention dropout (Qwen-VL trains with 0.0)")
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))        # (T, H, D)
    scale = scaling if scaling is not None else q.shape[-1] ** -0.5
    out = varlen(q, k, v, cu_seq_lens_q.to(torch.int32), int(max_length_q), scale)
    return out[None], None


def vision_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                             cu_seq_lens_q=None, max_length_q=None, **kwargs):
    """The vision tower's attention over all images of a batch in one varlen call (one image = one segment), where
    transformers otherwise runs one SDPA call per image per layer."""
    if cu_seq_lens_q is None or dropout:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
    scale = scaling if scaling is not None else q.shape[-1] ** -0.5
    return varlen(q, k, v, cu_seq_lens_q.to(torch.int32), int(max_length_q), scale, causal=False)[None], None


def use_varlen_vision(model, cpu_ok: bool = False) -> bool:
    """On CUDA with PyTorch's varlen kernels: route the vision tower's attention through them (all images in one
    call per layer). The attention name must contain "flash": that is what makes the Qwen-VL vision blocks pass
    the per-image boundaries as cu_seqlens instead of splitting. Set on the vision config only, after loading
    (loading with a "flash" name would look for the flash-attn package). Only replaces SDPA. Returns whether it
    was applied.
    cpu_ok (tests): also on CPU, where the portable per-image path does what transformers' own loop does."""
    visual = vision_tower(model)
    device = next(model.parameters()).device
    if visual is None or not cpu_ok and (device.type != "cuda" or _torch_varlen() is None):
        return False
    if visual.config._attn_implementation not in ("sdpa", VISION_NAME):  # eager or a real flash-attn: keep it
        return False
    from transformers import AttentionInterface

    AttentionInterface.register(VISION_NAME, vision_attention_forward)
    visual.config._attn_implementation = VISION_NAME
    return True


@functools.lru_cache(maxsize=1)
def register() -> str:
    """Make `attn_implementation="medvl_varlen"` loadable; its masks are SDPA's, none inside `packed_forward()`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, varlen_attention_forward)
    AttentionMaskInterface.register(NAME, _mask)
    return NAME
