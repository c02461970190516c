"""Early stopping on the validation metric: stop after `patience` evaluations without an improvement > `min_delta`.

Our own small callback rather than transformers' EarlyStoppingCallback, which reads the best value from the state
that checkpoint saving keeps (so it lags when save and eval steps differ) and records nothing. This one:
  - judges `metric_for_best_model` (eval_loss by default, or a generation metric such as eval_closed_accuracy:
    VLTrainer puts those in the same metrics dict), in the direction of `greater_is_better`;
  - logs `eval_early_stopping_best` and `eval_early_stopping_wait` at each evaluation (TensorBoard: eval/...);
  - replays the evaluations in the trainer state on a resumed run, so patience spans the interruption;
  - reports stopped_early / best value / best step for run_summary.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainerCallback


@dataclass
class Plateau:
    """Best value so far and how many evaluations since it improved by more than min_delta."""
    patience: int
    min_delta: float = 0.0
    greater_is_better: bool = False
    best: float | None = None
    best_step: int | None = None
    wait: int = 0
    evaluations: int = 0
    history: list = field(default_factory=list)

    def update(self, value: float, step: int) -> bool:
        """Record one evaluation; True when training should stop."""
        self.evaluations += 1
        self.history.append((step, value))
        gain = None if self.best is None else (value - self.best if self.greater_is_better else self.best - value)
        if gain is None or gain > self.min_delta:
            self.best, self.best_step, self.wait = value, step, 0
        else:
            self.wait += 1
        return self.wait >= self.patience


class EarlyStopping(TrainerCallback):
    def __init__(self, metric: str, patience: int, min_delta: float = 0.0, greater_is_better: bool = False,
                 log_fn=None):
        if patience < 1:
            raise ValueError(f"early stopping needs patience >= 1, got {patience}")
        self.metric = metric if metric.startswith("eval_") else f"eval_{metric}"
        self.plateau = Plateau(patience, min_delta, greater_is_better)
        self.log_fn = log_fn  # Trainer.log, to put the state in TensorBoard and log_history
        self.stopped_at: int | None = None
        self._training = False

    def on_train_begin(self, args, state, control, **kwargs):
        self._training = True
        for entry in state.log_history:  # a resumed run: the evaluations before the interruption count
            if self.metric in entry:
                self.plateau.update(entry[self.metric], entry.get("step", 0))

    def on_train_end(self, args, state, control, **kwargs):
        self._training = False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not self._training:  # a final evaluation after training decides nothing
            return
        if self.metric not in (metrics or {}):
            raise KeyError(f"early stopping watches {self.metric}, which this evaluation did not produce; "
                           f"available: {sorted(metrics or {})}")
        stop = self.plateau.update(float(metrics[self.metric]), state.global_step)
        if self.log_fn is not None:
            self.log_fn({"eval_early_stopping_best": self.plateau.best, "eval_early_stopping_wait": self.plateau.wait})
        if stop:
            self.stopped_at = state.global_step
            control.should_training_stop = True

    def summary(self) -> dict:
        p = self.plateau
        return {"metric": self.metric, "patience": p.patience, "min_delta": p.min_delta,
                "greater_is_better": p.greater_is_better, "stopped_early": self.stopped_at is not None,
                "stopped_at_step": self.stopped_at, "best_metric": p.best, "best_step": p.best_step,
                "evaluations": p.evaluations, "history": [list(h) for h in p.history]}
