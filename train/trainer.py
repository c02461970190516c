"""VLTrainer: an HF Trainer that honours per-component learning rates and adds generation metrics to evaluation."""
from __future__ import annotations

import contextlib
import functools
import logging

import torch
from transformers import Trainer

from medvl.collate import SKIPPED_KEY
from medvl.encoding import IGNORE_INDEX
from medvl.families import ModelFamily
from medvl.packing import is_packed, packed_position_ids
from medvl.varlen_attention import packed_forward
from train.adapters import param_group_of
from train.chunked_loss import chunked_nll_sum, labelled_positions
from train.curriculum import CurriculumCallback, CurriculumPlan, CurriculumSampler

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _head_as_identity(base):
    """Make the model return hidden states where it returns logits; the frozen head runs chunked afterwards."""
    head = base.get_output_embeddings()
    if any(p.requires_grad for p in head.parameters()):
        raise ValueError("--chunked_loss needs a frozen LM head (the head runs outside the wrapped forward)")
    base.set_output_embeddings(torch.nn.Identity())
    try:
        yield
    finally:
        base.set_output_embeddings(head)


class VLTrainer(Trainer):
    """HF's Trainer through its documented hooks; the training loop, loss scaling, accumulation, checkpointing and
    resume are the parent's. It overrides:

    - `_get_train_sampler`: with a curriculum, the CurriculumSampler (train/curriculum.py) instead of the shuffle;
      a CurriculumCallback, added here, gives it the run length (on_train_begin) and the epoch (on_epoch_begin).
    - `create_optimizer`: one param group per merger / llm / vision with its own LR (also under DeepSpeed, which
      calls this when ds_configs carry no optimizer block).
    - `training_step`, `prediction_step`: take the skipped-records entry out of the batch (into the run summary),
      then the parent's step.
    - `compute_loss`: packed rows get per-sample mRoPE ids and varlen attention, `chunked_loss` runs the frozen LM
      head on labelled positions only, the vision cache serves ViT features; every path returns the parent's
      compute_loss, so num_items_in_batch, devices and gradient accumulation scale them all alike.
    - `evaluation_loop`: eval loss, then greedy-generation metrics into the same metrics dict."""

    def __init__(self, *args, family: ModelFamily, group_lrs: dict[str, float | None], validator=None,
                 chunked_loss: bool = False, loss_chunk: int = 4096, vision_cache=None,
                 curriculum: CurriculumPlan | None = None, **kwargs):
        self.family, self.validator = family, validator
        self.group_lrs = group_lrs
        self.chunked_loss, self.loss_chunk, self.vision_cache = chunked_loss, loss_chunk, vision_cache
        # {id: reason} of records skipped while batches were built (in dataloader workers too: they come with the batch)
        self.failed_at_train_time: dict[str, str] = {}
        self.failed_at_eval_time: dict[str, str] = {}
        super().__init__(*args, **kwargs)
        self.curriculum_sampler = None
        if curriculum is not None:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            self.curriculum_sampler = CurriculumSampler(curriculum, seed)
            self.add_callback(CurriculumCallback(self.curriculum_sampler))

    # -- data order (train/curriculum.py) -------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        if self.curriculum_sampler is None:
            return super()._get_train_sampler(train_dataset)
        return self.curriculum_sampler

    # -- optimizer ------------------------------------------------------------------------------
    def expected_group_lrs(self) -> dict[str, float]:
        return {g: (lr if lr is not None else self.args.learning_rate) for g, lr in self.group_lrs.items()}

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        lrs = self.expected_group_lrs()
        groups: dict[tuple[str, bool], list] = {}
        for name, p in opt_model.named_parameters():
            if p.requires_grad:
                groups.setdefault((param_group_of(name, self.family), name in decay), []).append(p)
        param_groups = [
            {"params": ps, "lr": lrs.get(g, self.args.learning_rate),
             "weight_decay": self.args.weight_decay if d else 0.0, "group_name": g}
            for (g, d), ps in sorted(groups.items())]
        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, opt_model)
        kwargs.pop("lr", None)
        self.optimizer = cls(param_groups, lr=self.args.learning_rate, **kwargs)
        if cls.__module__.startswith("bitsandbytes"):
            _embeddings_in_32bit_state(opt_model)
        log.info("optimizer %s groups: %s", cls.__name__, [(g["group_name"], g["lr"], len(g["params"])) for g in param_groups])
        return self.optimizer

    def optimizer_name(self) -> str:
        """The class of the optimizer that steps, under accelerate / DeepSpeed wrappers."""
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        inner = getattr(inner, "optimizer", inner)
        return f"{type(inner).__module__.split('.')[0]}.{type(inner).__name__}"

    def optimizer_group_lrs(self) -> dict[str, float]:
        """The initial LR per group as the optimizer that actually steps holds it (DeepSpeed's included)."""
        opt = self.optimizer
        inner = getattr(opt, "optimizer", opt)  # accelerate / DeepSpeed wrappers
        inner = getattr(inner, "optimizer", inner)
        out = {}
        for g in inner.param_groups:
            out[g.get("group_name", "?")] = g.get("initial_lr", g["lr"])
        return out

    # -- records skipped in the dataloader ------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        return super().training_step(model, _take_skipped(inputs, self.failed_at_train_time), num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        return super().prediction_step(model, _take_skipped(inputs, self.failed_at_eval_time), prediction_loss_only,
                                       ignore_keys)

    # -- loss -----------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The padded path is HF's. Packed rows get their per-sample mRoPE ids and no mask; with `chunked_loss` the
        LM head runs only on labelled positions, a chunk at a time; with a vision cache the ViT runs once per image.
        Every path goes through the parent's compute_loss, so its scaling (num_items_in_batch, devices, GA) applies
        to all of them alike."""
        if not (is_packed(inputs) or self.chunked_loss):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.chunked_loss and (self.label_smoother is not None or self.compute_loss_func is not None):
            raise ValueError("--chunked_loss computes plain token NLL: it cannot be combined with "
                             "--label_smoothing_factor or a custom compute_loss_func")
        base = self._base_model(model)
        inputs = dict(inputs)
        packed = is_packed(inputs)
        if packed:
            inputs["position_ids"] = packed_position_ids(base.model, inputs)
            inputs["attention_mask"] = None
        if self.vision_cache is not None and "pixel_values" in inputs:
            inputs = self.vision_cache.embed(base.model, inputs)
        forward = functools.partial(_chunked_loss_forward, model, base, self.loss_chunk) if self.chunked_loss else model
        with packed_forward() if packed else contextlib.nullcontext():
            return super().compute_loss(forward, inputs, return_outputs, num_items_in_batch)

    def _base_model(self, model):
        """The transformers model under DDP / DeepSpeed / PEFT wrappers (LoRA layers live inside it)."""
        m = self.accelerator.unwrap_model(model)
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    # -- evaluation -----------------------------------------------------------------------------
    def evaluation_loop(self, *args, **kwargs):
        """Eval loss, then generation metrics into the same metrics dict: one log per evaluation, and callbacks'
        on_evaluate (early stopping) and best-model tracking see every metric."""
        output = super().evaluation_loop(*args, **kwargs)
        if self.validator is not None:
            prefix = kwargs.get("metric_key_prefix", "eval")
            output.metrics.update({f"{prefix}_{k}": v for k, v in self.validator.run(self.model, self.args).items()})
        return output


def _take_skipped(inputs: dict, into: dict) -> dict:
    """The batch without its skipped-records entry (medvl/collate.py), which goes into `into`."""
    if SKIPPED_KEY not in inputs:
        return inputs
    inputs = dict(inputs)
    into.update(inputs.pop(SKIPPED_KEY))
    return inputs


def _chunked_loss_forward(model, base, loss_chunk: int, labels, num_items_in_batch=None, **inputs) -> dict:
    """A model forward whose loss follows transformers' loss-kwargs contract, as the model's own loss does:
    Σ NLL / num_items_in_batch when the Trainer passes it, else the mean over this micro-batch's labelled tokens.
    The forward goes through the (DDP / DeepSpeed) wrapper; the LM head, frozen, runs after it on the labelled
    positions only. `logits_to_keep` with the head swapped for Identity returns those hidden states."""
    keep = (labels[0, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)[0] if labels.shape[0] == 1 else None
    with _head_as_identity(base):
        if keep is not None:
            hidden = model(**inputs, logits_to_keep=keep).logits[0]
            y = labels[0, 1:].index_select(0, keep)
        else:
            hidden, y = labelled_positions(model(**inputs).logits, labels)
    nll = chunked_nll_sum(hidden, y, base.get_output_embeddings(), loss_chunk)
    return {"loss": nll / (num_items_in_batch if num_items_in_batch is not None else max(y.numel(), 1))}


def _embeddings_in_32bit_state(model) -> None:
    """As HF's own create_optimizer does for bitsandbytes: embedding rows keep 32-bit optimizer state (8-bit state
    on sparse, large-range embedding updates is unstable); a no-op unless embeddings train."""
    import bitsandbytes  # optional, heavy: only with a bitsandbytes optimizer

    manager = bitsandbytes.optim.GlobalOptimManager.get_instance()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding) and module.weight.requires_grad:
            manager.register_module_override(module, "weight", {"optim_bits": 32})
