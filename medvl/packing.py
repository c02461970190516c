"""Padding-free packing: a micro-batch of samples becomes one row of real tokens.

The row carries the boundaries (`cu_seq_lens_*`, `max_length_*`) that the varlen attention (medvl/varlen_attention.py)
reads, so no sample attends across its neighbours and no padding token is ever computed. Position ids are the model's
own mRoPE ids per sample (`packed_position_ids`), restarted at 0 for every sample: the packed forward is the padded
forward, token for token.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from medvl.collate import add_images, add_skipped, with_vision_keepalive
from medvl.samples import IGNORE_INDEX, Encoded


@dataclass
class PackedCollator:
    """Concatenates a micro-batch into a (1, total_tokens) row. Labels at each sample's first token are ignored so
    the loss never predicts a sample from its neighbour's last token."""
    pad_token_id: int
    image_token_id: int
    emit_image_keys: bool = False   # for the vision-feature cache: "<record id>#<image index>" per image
    keepalive: Encoded | None = None  # multi-process training: see collator.with_vision_keepalive

    def __call__(self, batch: list[Encoded]) -> dict:
        batch = with_vision_keepalive(batch, self.keepalive)
        lengths = [len(b) for b in batch]
        ids = torch.tensor([t for b in batch for t in b.input_ids], dtype=torch.long)[None]
        cu = torch.zeros(len(batch) + 1, dtype=torch.int32)
        cu[1:] = torch.tensor(lengths, dtype=torch.int32).cumsum(0)
        out = {"input_ids": ids, "cu_seq_lens_q": cu, "cu_seq_lens_k": cu.clone(),
               "max_length_q": max(lengths), "max_length_k": max(lengths)}
        if batch[0].labels is not None:
            labels = torch.tensor([t for b in batch for t in b.labels], dtype=torch.long)[None]
            labels[0, cu[:-1].long()] = IGNORE_INDEX
            out["labels"] = labels
        add_images(out, batch, self.image_token_id)
        add_skipped(out, batch)
        if self.emit_image_keys:
            if any(b.key is None for b in batch):
                raise ValueError("the vision cache needs record ids on encoded samples (train.data.VLDataset sets them)")
            out["image_keys"] = [f"{b.key}#{j}" for b in batch
                                 for j in range(0 if b.image_grid_thw is None else len(b.image_grid_thw))]
        return out


def is_packed(inputs: dict) -> bool:
    return "cu_seq_lens_q" in inputs


def _rope_index_fn(inner_model):
    """The model's own mRoPE index function; its signature changed within transformers 5.x (mm_token_type_ids)."""
    fn = inner_model.get_rope_index
    takes_types = "mm_token_type_ids" in inspect.signature(fn).parameters
    return fn, takes_types


def packed_position_ids(inner_model, inputs: dict) -> torch.Tensor:
    """(4, 1, T) position ids for a packed row: row 0 = text positions restarting per sample (transformers reads it
    as the packing signal), rows 1-3 = each sample's own mRoPE ids, as the model computes them for that sample alone.

    The model's rope index runs once over the whole row (vision tokens find their grids in order); each sample's
    ids are then shifted so the sample starts at 0. RoPE is relative, but the shift makes them bit-identical to the
    padded batch's ids, which the equality tests rely on."""
    ids = inputs["input_ids"]
    fn, takes_types = _rope_index_fn(inner_model)
    kwargs = {"image_grid_thw": inputs.get("image_grid_thw")}
    if takes_types:
        kwargs["mm_token_type_ids"] = inputs["mm_token_type_ids"]
    pos3, _ = fn(ids, **kwargs)                           # (3, 1, T), continuing across samples
    cu = inputs["cu_seq_lens_q"].long()
    lengths = cu[1:] - cu[:-1]
    start = pos3[:, 0, cu[:-1]]                           # (3, n): each sample's first token (text: rows equal)
    pos3 = pos3 - torch.repeat_interleave(start, lengths, dim=1)[:, None, :]
    seg = torch.repeat_interleave(torch.arange(len(lengths), device=ids.device), lengths)
    text = torch.arange(ids.shape[1], device=ids.device) - cu[:-1][seg]
    return torch.cat([text.view(1, 1, -1), pos3], dim=0)
