"""Early stopping: the plateau rule on constructed metric sequences, then a real run on a constructed plateau
(learning rate 0: every evaluation scores the same) that stops, says so in run_summary.json and in TensorBoard."""
import json

import pytest

from tests.test_train import _train, synth  # noqa: F401  (synth is a fixture)
from train.early_stopping import Plateau


def _stop_step(values, **kw):
    p = Plateau(**kw)
    for step, v in enumerate(values, 1):
        if p.update(v, step):
            return step, p
    return None, p


def test_plateau_rule():
    # loss: improves twice, then stalls for `patience` evaluations
    assert _stop_step([3.0, 2.0, 2.0, 2.1], patience=2)[0] == 4
    # improvements no bigger than min_delta do not reset the patience
    step, p = _stop_step([3.0, 2.95, 2.91, 2.0], patience=2, min_delta=0.1)
    assert step == 3 and p.best == 3.0 and p.best_step == 1
    # a real improvement resets it
    assert _stop_step([3.0, 3.0, 2.0, 2.0, 2.0], patience=2)[0] == 5
    # accuracy: higher is better
    step, p = _stop_step([0.5, 0.6, 0.55, 0.6], patience=2, greater_is_better=True)
    assert step == 4 and p.best == 0.6 and p.best_step == 2
    assert _stop_step([0.5, 0.6, 0.7, 0.8], patience=1, greater_is_better=True)[0] is None


def test_run_stops_on_a_plateau_of_a_generation_metric(tiny_models, synth, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    s = _train(tiny_models["qwen2_vl"], synth["train"], tmp_path / "es", "--stage", 2, "--learning_rate", 0.0,
               "--max_steps", 20, "--eval_data", synth["val"], "--eval_strategy", "steps", "--eval_steps", 1,
               "--gen_eval_samples", 2, "--gen_max_new_tokens", 2, "--per_device_eval_batch_size", 6,
               "--metric_for_best_model", "token_f1", "--early_stopping_patience", 2, "--report_to", "tensorboard")
    es = s["early_stopping"]
    assert es["metric"] == "eval_token_f1" and es["greater_is_better"]  # a generation metric reached the callback
    assert es["stopped_early"] and es["stopped_at_step"] == 3 and es["best_step"] == 1 and es["evaluations"] == 3
    assert s["train_metrics"]["train_runtime"] > 0
    assert json.loads((tmp_path / "es" / "run_summary.json").read_text())["early_stopping"]["stopped_early"]
    ea = EventAccumulator(s["tensorboard_dir"])
    ea.Reload()
    waits = [(e.step, e.value) for e in ea.Scalars("eval/early_stopping_wait")]
    assert waits == [(1, 0.0), (2, 1.0), (3, 2.0)]


def test_early_stopping_needs_validation(tiny_models, synth, tmp_path):
    with pytest.raises(ValueError, match="needs validation"):
        _train(tiny_models["qwen2_vl"], synth["train"], tmp_path / "x", "--early_stopping_patience", 2, "--max_steps", 1)
