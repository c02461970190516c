"""Which test ids a model's predictions cover; refusing to compare models that do not cover the test set.

Why: a predictions file cut at a line boundary, or records listed under `failed` in run_info.json, would be
scored on fewer samples and its mean set against models scored on every sample. The test set is the ids of
type_mapping.json (data_process/data_trans.py writes one entry per test record), so the ids a model lacks are
known: "failed" (listed in run_info.json's `failed`) or "missing" (absent without a reason).
"""
from __future__ import annotations

from typing import Iterable, Mapping

from medvl.jsonio import DataError

ALLOW_FLAG = "--allow_partial"


class PartialCoverage(DataError):
    """A model's predictions cover less than the test set and partial coverage was not allowed."""


def coverage(pred_ids: Iterable[str], test_ids: Iterable[str], run_info: dict | None) -> dict | None:
    """{"n_test", "n_scored", "n_failed", "n_missing", "failed_ids", "missing_ids", "complete"}; None without a
    test set (no type mapping: coverage cannot be known)."""
    test = set(test_ids)
    if not test:
        return None
    preds = set(pred_ids)
    lacking = test - preds
    failed = {str(k) for k in ((run_info or {}).get("failed") or {})}
    failed_ids, missing_ids = sorted(lacking & failed), sorted(lacking - failed)
    return {"n_test": len(test), "n_scored": len(test & preds), "n_failed": len(failed_ids),
            "n_missing": len(missing_ids), "failed_ids": failed_ids, "missing_ids": missing_ids,
            "complete": not lacking}


def describe(model: str, cov: dict) -> str:
    """"stage2: 14 of 20 test ids (2 failed in run_info.json, 4 missing from predictions.jsonl)"."""
    return (f"{model}: {cov['n_scored']} of {cov['n_test']} test ids ({cov['n_failed']} failed in run_info.json, "
            f"{cov['n_missing']} missing from predictions.jsonl)")


def check(covs: Mapping[str, dict | None], allow_partial: bool) -> None:
    """Raise PartialCoverage naming every model that lacks test ids, unless allow_partial."""
    for m, c in covs.items():
        if c and not c["n_scored"]:
            raise DataError(f"{m}: none of its ids is in the type mapping ({c['n_test']} ids); is it the "
                            "type_mapping.json of this test set?")
    short = {m: c for m, c in covs.items() if c and not c["complete"]}
    if short and not allow_partial:
        raise PartialCoverage("predictions cover less than the test set: "
                              + "; ".join(describe(m, c) for m, c in short.items())
                              + f"; pass {ALLOW_FLAG} to compare the models on the ids all of them answered")
