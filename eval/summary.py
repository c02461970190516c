"""Read headline numbers back from evaluation_metrics.json (the demo's learning check, scripts, notebooks)."""
from __future__ import annotations


def metric_of(results: dict, model: str, category: str, metric: str) -> float:
    """results: the loaded evaluation_metrics.json. Raises KeyError naming what is missing."""
    try:
        return float(results["results"][model]["categories"][category]["metrics"][metric]["score"])
    except KeyError as e:
        raise KeyError(f"evaluation_metrics.json has no {metric} for model {model!r} in category {category!r} ({e})") from None


def closed_accuracy_of(results: dict, model: str) -> float:
    return metric_of(results, model, "closed", "closed_accuracy")
