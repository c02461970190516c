"""Greedy-generation metrics on a fixed validation subset, sharded across all ranks and gathered.

Every rank generates (never rank 0 alone: that hangs multi-GPU runs); each takes records[rank::world], padded
to the same count so ZeRO-3's collective forward passes line up, with `synced_gpus` under ZeRO-3.
"""
from __future__ import annotations

import torch

from .collator import VLCollator
from .preprocess import VLProcessor


def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def generation_scores(preds: list[str], refs: list, answer_types: list[str]) -> dict[str, float]:
    """Exact match, closed-ended accuracy and token F1: the eval suite's own metric functions and answer rule; a
    reference may be a list of accepted answers (best match, as evaluation scores them)."""
    from eval.metrics.closed import closed_accuracy
    from eval.metrics.references import best_of
    from eval.metrics.text import average as mean, exact_match, word_f1

    out = {"exact_match": mean(best_of(exact_match, preds, refs)), "token_f1": mean(best_of(word_f1, preds, refs))}
    closed = [i for i, t in enumerate(answer_types) if t == "closed"]
    if closed:
        out["closed_accuracy"] = mean(best_of(closed_accuracy, [preds[i] for i in closed], [refs[i] for i in closed]))
    return out


@torch.no_grad()
def greedy_generate(model, processor: VLProcessor, records: list[dict], batch_size: int, max_new_tokens: int,
                    synced_gpus: bool = False, return_ids: bool = False, **generate_kwargs) -> list:
    """Left-padded batched greedy decoding; returns the decoded answers in record order.
    `return_ids`: the new token ids per record instead of decoded text (benchmarks compare tokens)."""
    collate = VLCollator(processor.pad_token_id, processor.image_token_id, padding_side="left")
    encoded = [processor.encode(r, train=False) for r in records]
    outs: list = []
    for i in range(0, len(encoded), batch_size):
        outs += generate_batch(model, processor, collate(encoded[i:i + batch_size]), max_new_tokens, return_ids,
                               synced_gpus=synced_gpus, **generate_kwargs)
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


class GenerationValidator:
    def __init__(self, processor: VLProcessor, records: list[dict], max_new_tokens: int = 32, batch_size: int = 8):
        self.processor, self.records = processor, records
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def run(self, model, args) -> dict[str, float]:
        from transformers.integrations import is_deepspeed_zero3_enabled

        rank, world = _dist()
        idx = list(range(rank, len(self.records), world))
        per_rank = -(-len(self.records) // world)
        padded = idx + [idx[-1] if idx else 0] * (per_rank - len(idx))  # equal work on every rank
        was_training = model.training
        model.eval()
        try:
            preds = greedy_generate(model, self.processor, [self.records[i] for i in padded], self.batch_size,
                                    self.max_new_tokens, synced_gpus=is_deepspeed_zero3_enabled() and world > 1)
        finally:
            model.train(was_training)
        mine = list(zip(padded[:len(idx)], preds[:len(idx)]))
        if world > 1:
            gathered: list = [None] * world
            torch.distributed.all_gather_object(gathered, mine)
            mine = [x for part in gathered for x in part]
        by_idx = dict(mine)
        order = sorted(by_idx)
        assert order == list(range(len(self.records))), "validation shards lost samples"
        preds = [by_idx[i] for i in order]
        refs = [(r.get("meta") or {}).get("answers") or r["conversations"][-1]["value"] for r in self.records]
        types = [(r.get("meta") or {}).get("answer_type", "open") for r in self.records]
        return generation_scores(preds, refs, types)
