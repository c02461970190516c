"""Errors raised by the metric library.

Why a dedicated exception: a metric that cannot be computed (no Java, a BERTScore model that does not load) must
never turn into a score of 0.0 in a results table, where it would read as a model that answered everything wrong.
Every backend failure is re-raised as `MetricUnavailable`, which callers either let propagate (the default) or
record explicitly under an "unavailable" entry, never as a number.
"""


class MetricUnavailable(RuntimeError):
    """A metric could not be computed in this environment; `reason` says why and how to fix it."""

    def __init__(self, metric: str, reason: str):
        self.metric = metric
        self.reason = reason
        super().__init__(f"{metric} unavailable: {reason}")
