"""Batching encoded samples: right padding for training, left padding for generation."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .preprocess import IGNORE_INDEX, Encoded, mm_token_type_ids


@dataclass
class VLCollator:
    pad_token_id: int
    image_token_id: int
    padding_side: str = "right"   # "left" for batched generation

    def __call__(self, batch: list[Encoded]) -> dict:
        longest = max(len(b) for b in batch)
        ids = torch.full((len(batch), longest), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(batch), longest), dtype=torch.long)
        has_labels = batch[0].labels is not None
        labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long) if has_labels else None
        for i, b in enumerate(batch):
            n = len(b)
            sl = slice(longest - n, longest) if self.padding_side == "left" else slice(0, n)
            ids[i, sl] = torch.tensor(b.input_ids, dtype=torch.long)
            attn[i, sl] = 1
            if has_labels:
                labels[i, sl] = torch.tensor(b.labels, dtype=torch.long)
        out = {"input_ids": ids, "attention_mask": attn}
        if has_labels:
            out["labels"] = labels
        pix = [b.pixel_values for b in batch if b.pixel_values is not None]
        if pix:
            out["pixel_values"] = torch.cat(pix, dim=0)
            out["image_grid_thw"] = torch.cat([b.image_grid_thw for b in batch if b.image_grid_thw is not None], dim=0)
        out["mm_token_type_ids"] = mm_token_type_ids(ids, self.image_token_id)
        return out
