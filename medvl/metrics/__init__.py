"""Metric library: pure functions over lists of answers (and boxes), each checked against its reference
implementation in tests/test_metrics_*.py.

Modules: registry (every reported metric: name, label, direction, the categories it applies to, its reference
implementation; evaluation, tables, plots and the report read it), normalize (answer normalisation, yes/no), text
(string overlap, token F1), closed (closed-ended accuracy, yes/no P/R/F1), nlg (ROUGE; pycocoevalcap BLEU/METEOR/
CIDEr), meteor (the METEOR jar's process), bertscore, grounding (boxes), references (several accepted answers),
stats (bootstrap CI, paired tests), errors (MetricUnavailable).

A metric that cannot be computed raises `MetricUnavailable`; callers record it with its reason, never as 0.0.
eval/evaluate.py applies these per question category.
"""
from medvl.metrics.errors import MetricUnavailable

__all__ = ["MetricUnavailable"]
