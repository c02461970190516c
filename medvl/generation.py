"""Decoding records: one collated batch, or a list of records in order. Training validation, evaluation, Stage 3's
held-out reward and the LLM-backed data tools all generate through these functions, so "how an answer is produced"
lives in one place: greedy (`greedy_generate`, `generate_batch`) or a given sampling config (`generate_records`)."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from medvl.collate import VLCollator
from medvl.encoding import VLProcessor

GREEDY = {"do_sample": False, "num_beams": 1}


@torch.no_grad()
def generate_records(model, processor: VLProcessor, records: list[dict], batch_size: int, return_ids: bool = False,
                     progress: str | None = None, **generate_kwargs) -> list:
    """Left-padded batched decoding of `records`, outputs in record order (record-major when generate_kwargs ask
    for several sequences per record). generate_kwargs say how to decode (model.generate's arguments).
    `return_ids`: the new token ids instead of decoded text (benchmarks compare tokens).
    `progress`: a bar with this label, counting records (generation is the slow part of in-training validation)."""
    collate = VLCollator(processor.pad_token_id, processor.image_token_id, padding_side="left")
    encoded = [processor.encode(r, train=False) for r in records]
    outs: list = []
    with tqdm(total=len(encoded), desc=progress, disable=progress is None, leave=False) as bar:
        for i in range(0, len(encoded), batch_size):
            outs += _decode(model, processor, collate(encoded[i:i + batch_size]), return_ids, **generate_kwargs)
            bar.update(min(batch_size, len(encoded) - i))
    return outs


def greedy_generate(model, processor: VLProcessor, records: list[dict], batch_size: int, max_new_tokens: int,
                    synced_gpus: bool = False, return_ids: bool = False, progress: str | None = None,
                    **generate_kwargs) -> list:
    """Greedy answers to `records`, in order (see generate_records)."""
    return generate_records(model, processor, records, batch_size, return_ids, progress, synced_gpus=synced_gpus,
                            max_new_tokens=max_new_tokens, **GREEDY, **generate_kwargs)


def generate_batch(model, processor: VLProcessor, inputs: dict, max_new_tokens: int, return_ids: bool = False,
                   **generate_kwargs) -> list:
    """Greedy decoding of one collated, left-padded batch: answers (or new token ids) in batch order."""
    return _decode(model, processor, inputs, return_ids, max_new_tokens=max_new_tokens, **GREEDY, **generate_kwargs)


@torch.no_grad()
def _decode(model, processor: VLProcessor, inputs: dict, return_ids: bool, **generate_kwargs) -> list:
    device = next(model.parameters()).device
    batch = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
    gen = model.generate(**batch, pad_token_id=processor.pad_token_id, **generate_kwargs)
    new = gen[:, batch["input_ids"].shape[1]:]
    if return_ids:
        return new.tolist()
    return [t.strip() for t in processor.tokenizer.batch_decode(new, skip_special_tokens=True)]
