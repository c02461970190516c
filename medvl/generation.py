"""Greedy decoding: one collated batch, or a list of records in order. Training validation, evaluation and the
LLM-backed data tools all generate through these two functions, so "how an answer is produced" lives in one place."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from medvl.collate import VLCollator
from medvl.encoding import VLProcessor


@torch.no_grad()
def greedy_generate(model, processor: VLProcessor, records: list[dict], batch_size: int, max_new_tokens: int,
                    synced_gpus: bool = False, return_ids: bool = False, progress: str | None = None,
                    **generate_kwargs) -> list:
    """Left-padded batched greedy decoding; returns the decoded answers in record order.
    `return_ids`: the new token ids per record instead of decoded text (benchmarks compare tokens).
    `progress`: a bar with this label, counting records (generation is the slow part of in-training validation)."""
    collate = VLCollator(processor.pad_token_id, processor.image_token_id, padding_side="left")
    encoded = [processor.encode(r, train=False) for r in records]
    outs: list = []
    with tqdm(total=len(encoded), desc=progress, disable=progress is None, leave=False) as bar:
        for i in range(0, len(encoded), batch_size):
            outs += generate_batch(model, processor, collate(encoded[i:i + batch_size]), max_new_tokens, return_ids,
                                   synced_gpus=synced_gpus, **generate_kwargs)
            bar.update(min(batch_size, len(encoded) - i))
    return outs


def generate_batch(model, processor: VLProcessor, inputs: dict, max_new_tokens: int, return_ids: bool = False,
                   **generate_kwargs) -> list:
    """Greedy decoding of one collated, left-padded batch: answers (or new token ids) in batch order."""
    device = next(model.parameters()).device
    batch = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
    gen = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                         pad_token_id=processor.pad_token_id, **generate_kwargs)
    new = gen[:, batch["input_ids"].shape[1]:]
    if return_ids:
        return new.tolist()
    return [t.strip() for t in processor.tokenizer.batch_decode(new, skip_special_tokens=True)]
