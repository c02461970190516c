"""Greedy-generation metrics on a fixed validation subset, sharded across all ranks and gathered.

Every rank generates (never rank 0 alone: that hangs multi-GPU runs); each takes records[rank::world], padded
to the same count so ZeRO-3's collective forward passes line up, with `synced_gpus` under ZeRO-3.
"""
from __future__ import annotations

import torch

from medvl.encoding import VLProcessor
from medvl.generation import greedy_generate
from medvl.metrics.closed import closed_accuracy
from medvl.metrics.references import best_of
from medvl.metrics.text import average as mean, exact_match, token_f1


def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def generation_scores(preds: list[str], refs: list, answer_types: list[str]) -> dict[str, float]:
    """Exact match, closed-ended accuracy and token F1: the eval suite's own metric functions and answer rule; a
    reference may be a list of accepted answers (best match, as evaluation scores them)."""
    out = {"exact_match": mean(best_of(exact_match, preds, refs)), "token_f1": mean(best_of(token_f1, preds, refs))}
    closed = [i for i, t in enumerate(answer_types) if t == "closed"]
    if closed:
        out["closed_accuracy"] = mean(best_of(closed_accuracy, [preds[i] for i in closed], [refs[i] for i in closed]))
    return out


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
            show = rank == 0 and not getattr(args, "disable_tqdm", False)
            preds = greedy_generate(model, self.processor, [self.records[i] for i in padded], self.batch_size,
                                    self.max_new_tokens, synced_gpus=is_deepspeed_zero3_enabled() and world > 1,
                                    progress="validation: generating" if show else None)
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
