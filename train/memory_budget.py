"""--memory_budget_gib: pick samples per packed row, gradient checkpointing and the loss chunk so a run fits a GPU.

Peak memory of one packed training step is modelled as

    static (weights + trainable params' grads + Adam states) + FIXED_OVERHEAD_BYTES
    + worst_row_tokens * activation bytes per token (GC off or on)
    + logits: min(loss_chunk, labelled tokens of the worst row) * vocab * LOGIT_BYTES   (--chunked_loss)
              worst_row_tokens * vocab * LOGIT_BYTES                                   (without it)

The worst row is the sum of the B longest samples (and, separately, of the B largest labelled counts): any row the
collator can build from B samples is no longer, so a plan that fits it fits every step. The core here is pure
arithmetic over numbers (the plan is tested without a model); `static_bytes`, `text_dims` and `budget_from_card`
read a loaded model / the card, and `apply_memory_budget` writes a plan into the run's arguments (train.builder
calls it once; bench/train_throughput.py may call it the same way).

The plan is per process: with several GPUs every process holds its own row and a full copy of the optimizer states
(ZeRO-2/3 would shard those; that saving is ignored here, so the plan stays on the safe side).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GIB = 2 ** 30

# --- constants, fitted to measurements of Qwen2-VL-2B on H100/H200 (bf16, LoRA r16 on q,k,v,o,gate,up,down,
# packing + chunked loss (loss_chunk 4096) + vision cache, Stage 2; peak = torch.cuda.max_memory_allocated):
#   GC off, 32 samples/row, ~13.9k tokens/row: 59.6-61.3 GiB
#   GC on,  32 samples/row, ~14.05k tokens/row: 10.0 GiB;  GC on, 64 samples/row, ~27.6k tokens/row: 14.3 GiB
#   static: ~2.2e9 bf16 params (4.1 GiB) + 18.5M fp32 LoRA params with grads and Adam states (0.28 GiB)
#   labelled tokens: short VQA answers, ~4 per ~435-token sample (an assumption: ~1% of the row)
#
# Per layer and token a transformer block with GC off keeps ~10 hidden-sized and ~6 intermediate-sized tensors
# (norm inputs/outputs, q/k/v/o, attention output, residuals; gate, up, act(gate), their product, the LoRA dropout
# copies) in the model dtype: L * (10 h + 6 I) * dtype_bytes. The rest (embeddings, final norm, the hidden states
# upcast for the loss, masks) is counted as REMAINDER_HIDDEN_SIZED hidden-sized tensors per token.
LAYER_HIDDEN_TENSORS = 10
LAYER_INTERMEDIATE_TENSORS = 6
# GC off, 2B: (60.45 GiB mid - 4.38 static - 1.17 fixed - 0.2 logits) / 13.9k tokens = 4.23 MB/token; the layer term
# gives 3.87 MB, the 0.355 MB left is ~116 hidden-sized bf16 tensors (h = 1536).
REMAINDER_HIDDEN_SIZED = 116
# GC on keeps each layer's input (L * h) plus one layer being recomputed in backward (10 h + 6 I); the slope between
# the two GC-on points, (14.3 - 10.0 - 0.2 more logits) GiB / 13.55k tokens = 325 kB/token, is 1.45 times that.
GC_ON_FACTOR = 1.45
# What max_memory_allocated shows beyond the model's bytes and the row: the intercept of the GC-on points
# (10.0 - 4.38 - 0.2 - 14.05k * 325 kB) = ~1.17 GiB (cuBLAS workspaces, the optimizer step's temporaries, the vision
# tower's epoch-1 forward).
FIXED_OVERHEAD_BYTES = int(1.17 * GIB)
# Per logit element: bf16 logits (2) + their fp32 upcast (4) + the fp32 gradient (4) (chunked loss recomputes one
# chunk at a time in backward, so one chunk of the three is alive at once).
LOGIT_BYTES = 2 + 4 + 4
# Share of the budget left unplanned: the allocator's fragmentation (reserved > allocated) and the model's error
# (the GC-off measurements spread by +-1.5%). 5%, not 10%: at 10% the measured fast path (32/row, GC off, 60.5 GiB)
# would not be planned for a 64 GiB budget.
SAFETY_MARGIN = 0.05
# Rows with fewer tokens than this lose throughput (launch-bound kernels, measured): GC off is only chosen for rows
# at least this long on average, or for the whole requested row.
MIN_FAST_ROW_TOKENS = 8192
MIN_LOSS_CHUNK = 256
# `auto`: the card's memory minus what max_memory_allocated never shows (CUDA context, NCCL buffers, cached blocks).
CARD_RESERVE_BYTES = 2 * GIB


@dataclass(frozen=True)
class TextDims:
    hidden: int
    intermediate: int
    layers: int
    vocab: int
    dtype_bytes: int = 2


@dataclass(frozen=True)
class MemoryPlan:
    samples_per_row: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool
    loss_chunk: int
    estimated_peak_bytes: int
    budget_bytes: int
    reason: str

    def describe(self) -> str:
        return (f"memory plan for {self.budget_bytes / GIB:.1f} GiB: {self.samples_per_row} samples/row x "
                f"{self.gradient_accumulation_steps} accumulation steps, gradient checkpointing "
                f"{'on' if self.gradient_checkpointing else 'off'}, loss_chunk {self.loss_chunk}, estimated peak "
                f"{self.estimated_peak_bytes / GIB:.1f} GiB ({self.reason})")


class BudgetTooSmall(ValueError):
    pass


# ------------------------------------------------------------------------------------------------ the model
def activation_bytes_per_token(dims: TextDims, gradient_checkpointing: bool) -> float:
    """Bytes of activations one token of a packed row keeps alive for backward (LLM side)."""
    h, i, b = dims.hidden, dims.intermediate, dims.dtype_bytes
    one_layer = LAYER_HIDDEN_TENSORS * h + LAYER_INTERMEDIATE_TENSORS * i
    if gradient_checkpointing:
        return GC_ON_FACTOR * (dims.layers * h + one_layer) * b
    return (dims.layers * one_layer + REMAINDER_HIDDEN_SIZED * h) * b


def logits_bytes(dims: TextDims, row_tokens: int, row_labelled: int, loss_chunk: int, chunked_loss: bool) -> int:
    rows = min(loss_chunk, row_labelled) if chunked_loss else row_tokens
    return rows * dims.vocab * LOGIT_BYTES


def estimate_peak(dims: TextDims, static: int, row_tokens: int, row_labelled: int, gradient_checkpointing: bool,
                  loss_chunk: int, chunked_loss: bool = True) -> int:
    return int(static + FIXED_OVERHEAD_BYTES + row_tokens * activation_bytes_per_token(dims, gradient_checkpointing)
               + logits_bytes(dims, row_tokens, row_labelled, loss_chunk, chunked_loss))


def worst_rows(lengths: list[int], max_samples: int) -> list[int]:
    """worst[B] = tokens of the longest row B samples can make (the B longest samples); worst[0] = 0."""
    out, total = [0], 0
    for n in sorted(lengths, reverse=True)[:max_samples]:
        total += n
        out.append(total)
    while len(out) <= max_samples:  # fewer samples than B: a row can hold no more than all of them
        out.append(total)
    return out


# Rows drawn in random order (the Trainer's shuffle) are bounded by their mean plus this many standard deviations
# of a sum of B samples drawn without replacement: at 5 sigma a step exceeds it with probability ~3e-7 (normal
# approximation), where the B longest samples together (worst_rows) are ~1.7x the average row of mixed VQA data.
ROW_SIGMAS = 5.0


def random_rows(lengths: list[int], max_samples: int, sigmas: float = ROW_SIGMAS,
                longest: int | None = None) -> list[int]:
    """bound[B] for a row of B samples drawn at random without replacement: B * mean + sigmas * the sum's standard
    deviation (finite-population corrected), and never less than one longest sample plus B-1 average ones (a rare
    outlier is not normal); capped by the B longest samples together. `longest`: the longest sample of the whole
    set when `lengths` is a sample of it (then the cap is B * longest); bound[0] = 0."""
    n = len(lengths)
    mean = sum(lengths) / n
    var = sum((x - mean) ** 2 for x in lengths) / n
    top = max(lengths) if longest is None else max(longest, max(lengths))
    worst = worst_rows(lengths, max_samples) if longest is None else [b * top for b in range(max_samples + 1)]
    out = [0]
    for b in range(1, max_samples + 1):
        fpc = (n - b) / (n - 1) if n > 1 and b < n else 0.0
        spread = b * mean + sigmas * math.sqrt(b * var * fpc)
        out.append(min(worst[b], math.ceil(max(spread, (b - 1) * mean + top))))
    return out


def _chunks(requested: int) -> list[int]:
    """loss_chunk candidates, largest first: the requested one, halved down to MIN_LOSS_CHUNK."""
    out = [requested]
    while out[-1] // 2 >= MIN_LOSS_CHUNK:
        out.append(out[-1] // 2)
    return out


# ------------------------------------------------------------------------------------------------ the plan
def plan(budget_bytes: int, static_bytes: int, lengths: list[int], requested_batch: int, requested_accum: int,
         dims: TextDims, *, labelled: list[int] | None = None, loss_chunk: int = 4096, chunked_loss: bool = True,
         margin: float = SAFETY_MARGIN, shuffled: bool = False, longest: int | None = None) -> MemoryPlan:
    """The fastest layout that fits `budget_bytes` (less `margin`) with the effective batch of
    requested_batch x requested_accum kept: GC off with the largest row <= requested_batch if its rows average
    >= MIN_FAST_ROW_TOKENS (or it is the whole request), else GC on with the largest row that fits; the loss chunk
    is halved (never raised) where the logits are what does not fit. `lengths`: tokens per training sample;
    `labelled`: labelled tokens per sample (None: every token counts, the safe side). `shuffled`: rows are drawn in
    random order (no curriculum, no length grouping), so a row is bounded by random_rows; otherwise by the longest
    samples together (an ordered sampler can put them in one row). `longest`: the longest sample of the whole set
    when `lengths` is a sample of it (shuffled only). Raises BudgetTooSmall."""
    if not lengths:
        raise ValueError("memory budget: no training samples to plan for")
    usable = int(budget_bytes * (1 - margin))
    req = max(1, requested_batch)
    if shuffled:
        tokens = random_rows(lengths, req, longest=longest)
        labels = random_rows(labelled if labelled is not None else lengths, req)
    else:
        tokens = worst_rows(lengths, req)
        labels = worst_rows(labelled if labelled is not None else lengths, req)
    mean_len = sum(lengths) / len(lengths)
    chunks = _chunks(loss_chunk) if chunked_loss else [loss_chunk]

    def fits(b: int, gc: bool) -> tuple[int, int] | None:
        for chunk in chunks:  # the largest chunk that fits: smaller ones only cost LM-head launches
            peak = estimate_peak(dims, static_bytes, tokens[b], labels[b], gc, chunk, chunked_loss)
            if peak <= usable:
                return chunk, peak
        return None

    total = req * max(1, requested_accum)

    def top_row(gc: bool) -> int | None:
        return next((b for b in range(req, 0, -1) if fits(b, gc)), None)

    def largest(gc: bool, least: int = 1, exact_only: bool = False) -> tuple[int, int, int] | None:
        """(samples per row, loss_chunk, peak) of the largest row that fits, moved down to a divisor of the
        effective batch when one is at least half as large and >= `least` (the batch then stays exact); with
        `exact_only`, None where no such divisor exists."""
        top = top_row(gc)
        if top is None or top < least:
            return None
        b = next((d for d in range(top, max((top + 1) // 2, least) - 1, -1) if total % d == 0), None)
        if b is None:
            if exact_only:
                return None
            b = top
        return b, *fits(b, gc)

    # GC off only for rows long enough not to be launch-bound (or the whole request), and only with the
    # effective batch exact: a row that would change it goes to GC on, whose rows are longer.
    off = largest(False, least=min(req, math.ceil(MIN_FAST_ROW_TOKENS / mean_len)), exact_only=True)
    if off:
        b, chunk, peak, gc = *off, False
        why = "fits without gradient checkpointing" if b == req else \
            f"largest row without gradient checkpointing (~{b * mean_len:.0f} tokens/row on average)"
    else:
        on = largest(True)
        if on is None:
            need = estimate_peak(dims, static_bytes, tokens[1], labels[1], True, chunks[-1], chunked_loss)
            raise BudgetTooSmall(
                f"--memory_budget_gib {budget_bytes / GIB:.1f} is too small for this model and data: one sample per "
                f"row with gradient checkpointing needs ~{need / (1 - margin) / GIB:.1f} GiB")
        b, chunk, peak, gc = *on, True
        top_off = top_row(False)
        why = "gradient checkpointing on: " + (
            f"without it only {top_off} samples/row (~{top_off * mean_len:.0f} tokens) fit, under {MIN_FAST_ROW_TOKENS} "
            f"tokens or not dividing the effective batch {total}" if top_off else "without it not one sample fits")
    accum = math.ceil(total / b)
    if b * accum != total:
        why += f"; effective batch {b * accum}, not {total} ({total} is not a multiple of {b})"
    if chunk != loss_chunk:
        why += f"; loss_chunk {loss_chunk} -> {chunk}"
    sized = f"drawn at random (mean + {ROW_SIGMAS:g} sigma)" if shuffled else "the longest samples together"
    why += f"; rows sized as {sized}"
    return MemoryPlan(b, accum, gc, chunk, peak, int(budget_bytes), why)


# ------------------------------------------------------------------------------------------------ from a model
def parse_budget(value) -> float | str | None:
    """--memory_budget_gib as given: None (off: '' or 0), 'auto', or GiB as a float."""
    text = "" if value is None else str(value).strip().lower()
    if text in ("", "off", "none"):
        return None
    if text == "auto":
        return "auto"
    try:
        gib = float(text)
    except ValueError:
        raise ValueError(f"--memory_budget_gib must be a number of GiB, 'auto' or 0 (off), got {value!r}") from None
    if gib < 0 or not math.isfinite(gib):
        raise ValueError(f"--memory_budget_gib must be >= 0, got {value!r}")
    return gib or None


def budget_from_card(device=None) -> int:
    """`auto`: the total memory of this process's CUDA device (device 0 unless given) minus CARD_RESERVE_BYTES."""
    if not torch.cuda.is_available():
        raise ValueError("--memory_budget_gib auto needs a CUDA device; give the budget as a number of GiB")
    total = torch.cuda.get_device_properties(device if device is not None else 0).total_memory
    return total - CARD_RESERVE_BYTES


def text_dims(model) -> TextDims:
    """The LLM's sizes from the model's config (the text config of a VL model) and its dtype."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    dtype = getattr(base, "dtype", torch.bfloat16)
    return TextDims(cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size,
                    torch.empty((), dtype=dtype).element_size())


def static_bytes(model) -> int:
    """Weights and buffers as loaded, plus per trainable parameter a gradient and two Adam states in its own dtype
    (PEFT keeps LoRA weights in fp32 on a bf16 model: read from the tensors, not assumed). 8-bit optimizers need
    less; the plan does not count on it."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    weights += sum(b.numel() * b.element_size() for b in model.buffers())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return weights + 3 * trainable


def set_gradient_checkpointing(targs, on: bool) -> None:
    """Both names transformers has had for it (activation_checkpointing in newer releases, gradient_checkpointing
    the older, now an alias), non-reentrant as the project runs it."""
    for name in ("activation_checkpointing", "gradient_checkpointing"):
        if hasattr(targs, name):
            setattr(targs, name, on)
    if on:
        for name in ("activation_checkpointing_kwargs", "gradient_checkpointing_kwargs"):
            if hasattr(targs, name) and not getattr(targs, name):
                setattr(targs, name, {"use_reentrant": False})


def apply_memory_budget(model, targs, fargs, lengths: list[int], budget_gib, labelled: list[int] | None = None,
                        device=None, shuffled: bool = False, longest: int | None = None) -> MemoryPlan:
    """Plan for a prepared model (adapters applied) and write it into the run's arguments: samples per packed row
    (per_device_train_batch_size), gradient_accumulation_steps, gradient checkpointing, fargs.loss_chunk.
    `budget_gib`: GiB, or 'auto' (this card less CARD_RESERVE_BYTES). Call once, before the Trainer is made."""
    budget = parse_budget(budget_gib)
    if budget is None:
        raise ValueError("apply_memory_budget: no budget given")
    budget_bytes = budget_from_card(device) if budget == "auto" else int(budget * GIB)
    p = plan(budget_bytes, static_bytes(model), lengths, targs.per_device_train_batch_size,
             targs.gradient_accumulation_steps, text_dims(model), labelled=labelled, loss_chunk=fargs.loss_chunk,
             chunked_loss=fargs.chunked_loss, shuffled=shuffled, longest=longest)
    targs.per_device_train_batch_size = p.samples_per_row
    targs.gradient_accumulation_steps = p.gradient_accumulation_steps
    set_gradient_checkpointing(targs, p.gradient_checkpointing)
    fargs.loss_chunk = p.loss_chunk
    if p.gradient_checkpointing:  # as prepare_model does for a run that asked for checkpointing itself
        model.config.use_cache = False
    return p
