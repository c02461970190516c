"""Length-sorted prompt batches, encoded by worker processes while the GPU generates the previous batch.

Generation is only fast if the CPU work (image decode + resize, chat template, tokenising) overlaps the GPU work,
and if one batch holds prompts of similar length (left padding costs prefill compute). Sorting needs the lengths
before anything is encoded: `length_estimate` reads each image's size from its file header (no pixel decode) and
applies the image processor's pixel budget. A torch DataLoader then encodes one record per item in that order,
`prefetch` records ahead, in worker processes (no GIL contention with the decode loop). The main process only
concatenates and generates. A record that cannot be encoded comes back as a named failure, never dropped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Iterator

import torch

from data_process.schema import image_list
from train.collator import VLCollator
from train.preprocess import Encoded, SampleError, VLProcessor


def default_workers() -> int:
    """One core stays with the main process (it drives the GPU)."""
    return min(8, max(0, (os.cpu_count() or 1) - 1))


def _pixel_budget(image_processor) -> tuple[int, int]:
    size = getattr(image_processor, "size", None) or {}
    lo = getattr(image_processor, "min_pixels", None) or size.get("shortest_edge") or 56 * 56
    hi = getattr(image_processor, "max_pixels", None) or size.get("longest_edge") or 28 * 28 * 1280
    return int(lo), int(hi)


def length_estimate(processor: VLProcessor, rec: dict, train: bool = False) -> int:
    """Approximate prompt length in tokens, cheap: image tokens from the header size under the pixel budget, plus
    ~3 characters per text token. Only the batch order depends on it; answers do not. An image that cannot be
    opened counts 0 here and is reported by the encoder with its reason."""
    from PIL import Image

    lo, hi = _pixel_budget(processor.image_processor)
    factor = processor.patch * processor.merge
    n = 0
    for p in image_list(rec):
        try:
            with Image.open(processor.image_path(p, rec.get("id"))) as im:
                w, h = im.size
        except (OSError, ValueError, SampleError, Image.DecompressionBombError):
            continue
        n += min(max(w * h, lo), hi) // factor ** 2
    turns = rec.get("conversations") or []
    if not train:
        turns = [t for t in turns if t.get("from") != "gpt"] or turns
    return n + sum(len(str(t.get("value", ""))) for t in turns) // 3


class _EncodeRecords(torch.utils.data.Dataset):
    """Item i = (record, Encoded | None, error | None); pixels cast to the vision tower's dtype in the worker
    (the model casts to that dtype first thing, so the result is the same and the transfer half the size)."""

    def __init__(self, processor: VLProcessor, records: list[dict], train: bool, pixel_dtype: torch.dtype | None):
        self.processor, self.records, self.train, self.pixel_dtype = processor, records, train, pixel_dtype

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        rec = self.records[i]
        try:
            enc = self.processor.encode(rec, train=self.train)
        except SampleError as e:
            return rec, None, str(e)
        if self.pixel_dtype is not None and enc.pixel_values is not None:
            enc.pixel_values = enc.pixel_values.to(self.pixel_dtype)
        return rec, enc, None


@dataclass
class PromptBatch:
    records: list[dict]                  # the records of this batch that encoded
    encoded: list[Encoded]               # their encodings, pixels dropped (they are in `inputs`)
    inputs: dict | None                  # collated tensors, None if no record of the batch encoded
    failed: dict[str, str] = field(default_factory=dict)   # {id: reason} for this batch's records that did not


def _keep(item):
    return item


def prompt_batches(processor: VLProcessor, records: list[dict], batch_size: int, num_workers: int | None = None,
                   train: bool = False, sort_by_length: bool = True, padding_side: str = "left",
                   pixel_dtype: torch.dtype | None = None) -> Iterator[PromptBatch]:
    """Yield PromptBatch per `batch_size` records, longest first (an out-of-memory shows in the first batch, not
    the last). train=True encodes prompt + reference answer with labels (perplexity scoring)."""
    num_workers = default_workers() if num_workers is None else num_workers
    order = list(range(len(records)))
    if sort_by_length:
        keys = [length_estimate(processor, r, train) for r in records]
        order.sort(key=lambda i: -keys[i])
    loader = torch.utils.data.DataLoader(
        _EncodeRecords(processor, records, train, pixel_dtype), batch_size=None, sampler=order,
        num_workers=num_workers, collate_fn=_keep,
        # enough records in flight that the next batch is ready when the GPU finishes this one
        prefetch_factor=max(2, -(-2 * batch_size // num_workers)) if num_workers else None)
    collate = VLCollator(processor.pad_token_id, processor.image_token_id, padding_side=padding_side)
    items = iter(loader)
    for start in range(0, len(order), batch_size):
        chunk = [next(items) for _ in range(min(batch_size, len(order) - start))]
        ok = [(r, e) for r, e, err in chunk if err is None]
        failed = {str(r.get("id")): err for r, _, err in chunk if err is not None}
        inputs = collate([e for _, e in ok]) if ok else None
        yield PromptBatch([r for r, _ in ok], [replace(e, pixel_values=None) for _, e in ok], inputs, failed)
