"""Calibration of one model's closed yes/no answers, from what eval.perplexity stored and what the model answered.

    result["calibration"] = model_calibration(result)      # result: eval.evaluate.evaluate_predictions(...)

Which answers: the ids of the "closed" category (type_mapping.json) whose perplexity.json entry has "yes_no_prob"
(the reference is an English yes/no answer, eval/perplexity.py) and whose prediction is a yes/no answer by the
project's rule (medvl.answers.yes_no). A prediction that is neither yes nor no has no confidence in a yes/no answer:
it is left out and counted (n_not_yes_no); closed accuracy in the tables still scores it as wrong.

Confidence = p(the word the prediction says) / (p(yes) + p(no)) at the first answer position: the model's
probability for its own answer, normalised over the two answers (the rest of the vocabulary - "The", "There" -
is not an answer). mean_yes_no_mass says how much of the distribution the two words held before normalising.
Correct = the category's per-sample closed accuracy (medvl.metrics.closed.closed_accuracy; several accepted
answers: the best). The numbers: medvl.metrics.calibration.calibration_summary (ECE over 10 equal-width bins, the
bin table, risk-coverage and its area).

No "yes_no_prob" anywhere (no perplexity.json, or one written before the probabilities were stored) gives
{"available": False, "reason": "no calibration data: rerun eval.perplexity ..."}: never a 0.
"""
from __future__ import annotations

from typing import Mapping

from medvl.answers import yes_no
from medvl.jsonio import DataError
from medvl.metrics.calibration import DEFAULT_BINS, calibration_summary
from eval.predictions import load_predictions

NO_DATA = "no calibration data: rerun eval.perplexity"
RERUN_NOTE = ("rerun python -m eval.perplexity with the same --out_dir (without --overwrite, which would remove the "
              "predictions too): it now stores p(yes) and p(no) at the first answer position of every yes/no record")
CONFIDENCE_RULE = ("p(the predicted word) / (p(yes) + p(no)) at the first answer position (eval.perplexity: softmax "
                   "summed over each word's single-token variants)")


def _unavailable(reason: str) -> dict:
    return {"available": False, "reason": reason}


def model_calibration(result: Mapping, n_bins: int = DEFAULT_BINS, predictions: list[dict] | None = None) -> dict:
    """Calibration of one model's closed yes/no answers (module docstring). predictions: its predictions.jsonl rows
    (read from result["pred_path"] when not given)."""
    ppl = result.get("perplexity")
    if not ppl:
        return _unavailable(f"{NO_DATA} (no perplexity.json beside the predictions)")
    probs = {rid: e["yes_no_prob"] for rid, e in (ppl.get("per_sample") or {}).items()
             if isinstance(e, Mapping) and e.get("yes_no_prob")}
    if not probs:
        missing = (ppl.get("yes_no_tokens") or {}).get("missing")
        if missing:
            return _unavailable(f"no calibration data: {missing}")
        if "yes_no_tokens" not in ppl:
            return _unavailable(f"{NO_DATA} (its perplexity.json predates the yes/no probabilities)")
        return _unavailable("no calibration data: no test record has an English yes/no reference answer")
    closed = (result.get("categories") or {}).get("closed")
    scores = ((closed or {}).get("metrics") or {}).get("closed_accuracy")
    if not closed or not scores or scores.get("per_sample") is None:
        return _unavailable("no calibration data: no closed questions scored (type_mapping.json)")
    if predictions is None:
        try:
            predictions = load_predictions(result["pred_path"])
        except (OSError, DataError, KeyError) as e:
            return _unavailable(f"no calibration data: predictions not readable ({e})")
    said = {str(r["id"]): r["prediction"] for r in predictions}
    conf, correct, not_yes_no, no_mass, mass = [], [], 0, 0, []
    candidates = [(rid, s) for rid, s in zip(closed["ids"], scores["per_sample"]) if rid in probs and rid in said]
    for rid, score in candidates:
        word = yes_no(said[rid])
        p = probs[rid]
        total = float(p["yes"]) + float(p["no"])
        if word is None:
            not_yes_no += 1
            continue
        if total <= 0.0:  # all of the mass underflowed elsewhere: no ratio to take
            no_mass += 1
            continue
        conf.append(min(1.0, float(p[word]) / total))
        correct.append(float(score))
        mass.append(total)
    if not conf:
        return _unavailable(f"no calibration data: none of the {len(candidates)} closed yes/no questions was "
                            "answered yes or no")
    return {"available": True, **calibration_summary(conf, correct, n_bins), "n_closed_yes_no": len(candidates),
            "n_not_yes_no": not_yes_no, "n_zero_mass": no_mass, "mean_yes_no_mass": sum(mass) / len(mass),
            "confidence": CONFIDENCE_RULE, "tokens": ppl.get("yes_no_tokens")}


def calibration_of(result: Mapping) -> dict:
    """The calibration stored in a result (result_statistic.py attaches it), else computed now (an older
    evaluation_metrics.json)."""
    return result.get("calibration") or model_calibration(result)


def attach_calibration(results: Mapping[str, dict], n_bins: int = DEFAULT_BINS) -> dict[str, dict]:
    """result["calibration"] for every model; returns {model: calibration}."""
    for r in results.values():
        r["calibration"] = model_calibration(r, n_bins)
    return {m: r["calibration"] for m, r in results.items()}


def _range(b: dict) -> str:
    return f"[{b['lower']:.1f}, {b['upper']:.1f}{']' if b['upper'] >= 1.0 else ')'}"


def calibration_sections(results: Mapping[str, dict], best_of=None) -> list[dict]:
    """The tables' "calibration" section (ECE, AURC, accuracy, confidence per model) and its bin table.
    best_of(values, higher) marks the best cells (eval/tables.py's rule); a model without data reads NO_DATA."""
    models = list(results)
    cals = [calibration_of(results[m]) for m in models]
    ok = [c if c.get("available") else None for c in cals]
    if not any(ok):
        reasons = dict.fromkeys(c["reason"] for c in cals)
        return [{"title": "calibration of closed yes/no answers", "n_text": "no data", "header": models,
                 "rows": [("calibration", [c["reason"] for c in cals], [False] * len(models))],
                 "notes": [RERUN_NOTE] if any(r.startswith(NO_DATA) for r in reasons) else []}]
    same_n = len({c["n"] for c in ok if c}) == 1 and all(ok)

    def row(name, get, fmt, higher=None, reason=False):
        vals = [get(c) if c else None for c in ok]
        cells = [fmt(v) if v is not None else cals[k]["reason"] if reason else "-" for k, v in enumerate(vals)]
        best = best_of([round(v, 3) if v is not None else None for v in vals], higher) \
            if best_of and higher is not None and same_n else [False] * len(models)
        return name, cells, best

    n_bins = next(c["n_bins"] for c in ok if c)
    three = "{:.3f}".format
    rows = [row("closed yes/no answers scored", lambda c: c["n"], str, reason=True),
            row("not a yes/no prediction (left out)", lambda c: c["n_not_yes_no"], str),
            row(f"ECE ({n_bins} equal-width bins)", lambda c: c["ece"], three, higher=False),
            row("AURC (risk-coverage area)", lambda c: c["risk_coverage"]["aurc"], three, higher=False),
            row("accuracy of the scored answers", lambda c: c["accuracy"], three),
            row("mean confidence", lambda c: c["mean_confidence"], three),
            row("mean p(yes) + p(no) before normalising", lambda c: c["mean_yes_no_mass"], three)]
    summary = {"title": "calibration of closed yes/no answers", "first_column": "measure",
               "n_text": "lower ECE / AURC is better", "header": models, "rows": rows,
               "notes": ["confidence = " + CONFIDENCE_RULE + "; correct = closed accuracy (the tables' rule); a "
                         "prediction that is neither yes nor no is left out and counted",
                         f"ECE = sum over {n_bins} equal-width confidence bins of (bin share) x |bin accuracy - bin "
                         "mean confidence|; AURC = area under risk (1 - accuracy of the answered) vs coverage when "
                         "the model abstains below each confidence (medvl/metrics/calibration.py)"]
               + ([RERUN_NOTE] if any(not c.get("available") and c["reason"].startswith(NO_DATA) for c in cals)
                  else [])}
    bins_rows = []
    for k in range(n_bins):
        cells, any_count = [], False
        for c, cal in zip(ok, cals):
            if not c:
                cells.append("-")  # the reason is in the summary section
                continue
            b = c["bins"][k]
            any_count |= b["count"] > 0
            cells.append(f"conf {b['mean_confidence']:.3f} / acc {b['accuracy']:.3f} (n={b['count']})"
                         if b["count"] else "(n=0)")
        if any_count:
            first = next(c for c in ok if c)["bins"][k]
            bins_rows.append((f"confidence {_range(first)}", cells, [False] * len(models)))
    bins = {"title": "calibration bins (reliability diagram data)", "first_column": "bin", "header": models,
            "n_text": "mean confidence / accuracy (count) per bin; empty bins left out", "rows": bins_rows,
            "notes": []}
    return [summary, bins]
