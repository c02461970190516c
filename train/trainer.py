"""VLTrainer: an HF Trainer that honours per-component learning rates and adds generation metrics to evaluation."""
from __future__ import annotations

import logging

from transformers import Trainer

from .adapters import param_group_of
from .models import ModelFamily

log = logging.getLogger(__name__)


class VLTrainer(Trainer):
    """Overrides two hooks: `create_optimizer` (LR per merger / llm / vision group, also under DeepSpeed, which
    calls this when ds_configs carry no optimizer block) and `evaluate` (eval loss + greedy-generation metrics)."""

    def __init__(self, *args, family: ModelFamily, group_lrs: dict[str, float | None], validator=None, **kwargs):
        self.family, self.validator = family, validator
        self.group_lrs = group_lrs
        super().__init__(*args, **kwargs)

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
        log.info("optimizer groups: %s", [(g["group_name"], g["lr"], len(g["params"])) for g in param_groups])
        return self.optimizer

    def optimizer_group_lrs(self) -> dict[str, float]:
        """The initial LR per group as the optimizer that actually steps holds it (DeepSpeed's included)."""
        opt = self.optimizer
        inner = getattr(opt, "optimizer", opt)  # accelerate / DeepSpeed wrappers
        inner = getattr(inner, "optimizer", inner)
        out = {}
        for g in inner.param_groups:
            out[g.get("group_name", "?")] = g.get("initial_lr", g["lr"])
        return out

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.validator is not None:
            gen = {f"{metric_key_prefix}_{k}": v for k, v in self.validator.run(self.model, self.args).items()}
            self.log(gen)
            metrics.update(gen)
        return metrics
