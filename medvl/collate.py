"""Batching encoded samples: right padding for training, left padding for generation."""
from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from medvl.samples import IGNORE_INDEX, Encoded
from medvl.schema import make_record


def mm_token_type_ids(input_ids, image_token_id: int):
    """transformers 5.x needs the modality of each token (1 = image) whenever image_grid_thw is passed."""
    return (input_ids == image_token_id).long()


def with_vision_keepalive(batch: list[Encoded], keepalive: Encoded | None) -> list[Encoded]:
    """A text-only batch gets one tiny image sample with no labels, so the vision tower runs on every rank.
    Under ZeRO-3 every module's forward is a collective (its weights are gathered): a rank that skips the ViT while
    the others run it hangs them all; under DDP, Stage 1's merger would get no gradient on that rank. The extra
    sample carries no label, so the loss and its normalisation are unchanged."""
    if keepalive is None or any(b.pixel_values is not None for b in batch):
        return batch
    return batch + [dataclasses.replace(keepalive, labels=[IGNORE_INDEX] * len(keepalive))]


@dataclass
class VLCollator:
    pad_token_id: int
    image_token_id: int
    padding_side: str = "right"   # "left" for batched generation
    keepalive: Encoded | None = None  # multi-process training: see with_vision_keepalive

    def __call__(self, batch: list[Encoded]) -> dict:
        batch = with_vision_keepalive(batch, self.keepalive)
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
        add_skipped(out, batch)
        return add_images(out, batch, self.image_token_id)


SKIPPED_KEY = "skipped_records"


def add_skipped(out: dict, batch: list[Encoded]) -> None:
    """Records the dataset skipped to build this batch, {id: reason}, under SKIPPED_KEY (only when there are any):
    the batch is what crosses from a dataloader worker to the main process."""
    skipped = {k: v for b in batch for k, v in b.skipped.items()}
    if skipped:
        out[SKIPPED_KEY] = skipped


def add_images(out: dict, batch: list[Encoded], image_token_id: int) -> dict:
    """The batch's images in sample order, and each token's modality (transformers 5.x asks for it with images)."""
    pix = [b.pixel_values for b in batch if b.pixel_values is not None]
    if pix:
        out["pixel_values"] = torch.cat(pix, dim=0)
        out["image_grid_thw"] = torch.cat([b.image_grid_thw for b in batch if b.image_grid_thw is not None], dim=0)
    out["mm_token_type_ids"] = mm_token_type_ids(out["input_ids"], image_token_id)
    return out


def make_keepalive(processor) -> Encoded:
    """The keepalive sample: a blank 56x56 image (the smallest Qwen-VL input) through the one encoding path."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "keepalive.png"
        Image.new("RGB", (56, 56), (128, 128, 128)).save(path)
        enc = processor.encode(make_record("__keepalive__", str(path), "Describe the image.", "blank", {"dataset": "keepalive"}), train=True)
    enc.key = "__keepalive__"
    return enc
