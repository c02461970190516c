"""Text metrics of one model per category: which metric applies where, computed once per sample, averaged per
category, with bootstrap CIs on the headline metrics.

Which metric where (the registry's applies_to, medvl.metrics.registry; stated in the tables):
  * closed_accuracy: categories whose samples are all closed. yes/no precision/recall/F1: categories whose
    references are all yes/no.
  * BLEU-1..4: categories whose samples are all open-ended (open, caption, all-open native ones). BLEU of a correct
    one-word answer is meaningless (pycocoevalcap gives ~0 per sample), so a category holding closed answers gets
    "not applicable" with that reason instead of a number.
  * METEOR (the jar's corpus score), CIDEr (idf from the category's own references; needs >= 2 samples), ROUGE,
    string-overlap and BERTScore: every text category.
A metric that does not apply is recorded under "not_applicable" with the reason; one whose backend fails raises
MetricUnavailable, or with allow_missing is recorded under "unavailable" (Collector). Neither is ever 0.0.

Several accepted answers: per-sample metrics keep the best match over them, BLEU / METEOR / CIDEr get them all as
pycocoevalcap's multiple references, the first decides yes/no (medvl.metrics.references).

Efficiency: per-sample metrics are computed once over all samples and averaged per category. pycocoevalcap input is
PTB-tokenized in one JVM call per model; BLEU and CIDEr are pure Python and run per category on the tokenized
subset; METEOR runs in one JVM per model or one for all models (MeteorSession), called per category.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Sequence

from tqdm import tqdm

from medvl.jsonio import DataError
from medvl.metrics import closed, nlg, stats
from medvl.metrics.bertscore import bertscore_f1
from medvl.metrics.errors import MetricUnavailable
from medvl.metrics.meteor import MeteorSession
from medvl.metrics.normalize import yes_no
from medvl.metrics.references import best, best_of, flatten
from medvl.metrics.registry import APPLIES_TO, BLEU, COCO, HEADLINE, METRICS, TEXT_PER_SAMPLE, YES_NO, applies
from medvl.metrics.text import average


class Collector:
    """Runs metric groups, turning MetricUnavailable into recorded reasons when allowed."""

    def __init__(self, allow_missing: bool):
        self.allow_missing = allow_missing
        self.unavailable: dict[str, str] = {}

    def run(self, names: Iterable[str], fn: Callable[[], Any]) -> Any:
        names = [n for n in names if n not in self.unavailable]
        if not names:
            return None
        try:
            return fn()
        except MetricUnavailable as e:
            if not self.allow_missing:
                raise
            for n in names:
                self.unavailable[n] = str(e)
            return None


def entry(per_sample: list, score: float | None = None, **extra) -> dict:
    """A metric's result: its score (the mean of per_sample unless given) and the per-sample list."""
    return {"score": average(per_sample) if score is None else float(score), "per_sample": list(per_sample), **extra}


def _subset(d: dict, idx: Sequence[int]) -> dict:
    return {k: d[i] for k, i in enumerate(idx)}


def _tokenize(preds, refs, ids) -> tuple[dict, dict]:
    try:
        return nlg.coco_tokenize_pairs(preds, refs)
    except ValueError as e:  # name the id, not the list index
        m = re.search(r"sample (\d+)", str(e))
        where = f" (id {ids[int(m.group(1))]!r})" if m and int(m.group(1)) < len(ids) else ""
        raise DataError(f"{e}{where}") from None


def _yes_no_metrics(res: dict, preds: list[str], first: list[str], idx: list[int], yn_questions: bool,
                    all_yes_no: bool) -> None:
    if not all_yes_no:
        why = ("a reference is not an English yes/no word (medvl.metrics.normalize.yes_no)" if yn_questions
               else APPLIES_TO["yes_no"])
        res["not_applicable"].update({m: why for m in YES_NO})
        return
    yn = closed.yes_no_prf([preds[i] for i in idx], [first[i] for i in idx])
    res["yes_no"] = yn
    for m in YES_NO:
        key = m.rsplit("_", 1)[1]  # precision / recall / f1
        if yn[key] is None:
            res["not_applicable"][m] = f"undefined: no 'yes' {'predictions' if key == 'precision' else 'references'}"
        else:
            res["metrics"][m] = {"score": float(yn[key]), "per_sample": None}


def _coco_metrics(res: dict, tok, idx: list[int], is_open: bool, session: MeteorSession, col: Collector) -> None:
    gts, rs = _subset(tok[0], idx), _subset(tok[1], idx)
    mets = res["metrics"]
    if is_open:
        for m, v in nlg.coco_from_tokens(gts, rs, BLEU).items():
            mets[m] = entry(v["per_sample"], v["score"])
    else:
        res["not_applicable"].update({m: APPLIES_TO["open"] for m in BLEU})
    if len(idx) >= 2:
        v = nlg.coco_from_tokens(gts, rs, ["cider"])["cider"]
        mets["cider"] = entry(v["per_sample"], v["score"])
    else:
        res["not_applicable"]["cider"] = "CIDEr needs >= 2 samples (idf comes from the category's references)"
    got = col.run(["meteor"], lambda: session.meteor(gts, rs))
    if got is not None:
        mets["meteor"] = entry(got[1], got[0], note="corpus METEOR of the jar (not the mean of per_sample)")


def text_categories(rows, infos, cats, *, bertscore_model, bertscore_layers, session: MeteorSession, n_boot, seed,
                    col: Collector) -> tuple[dict, dict | None]:
    """({category: {"n", "ids", "metrics", "not_applicable", ["yes_no"]}}, BERTScore info or None)."""
    preds = [r["prediction"] for r in rows]
    refs = [r["references"] for r in rows]  # every accepted answer: best match per sample, multi-ref BLEU/CIDEr
    first = [r[0] for r in refs]  # decides yes/no (accepted forms of one answer agree on it)
    ids = [r["id"] for r in rows]
    per_sample = {m: best_of(METRICS[m].fn, preds, refs) for m in TEXT_PER_SAMPLE}

    bert_info = None
    if bertscore_model:
        fp, fr, owner = flatten(preds, refs)
        got = col.run(["bertscore_f1"], lambda: bertscore_f1(fp, fr, model=bertscore_model,
                                                            num_layers=bertscore_layers))
        if got is not None:
            per_sample["bertscore_f1"], bert_info = best(got[0], owner, len(preds)), got[1]

    tok = col.run(COCO, lambda: _tokenize(preds, refs, ids))
    out = {}
    # METEOR (a JVM call) and CIDEr run per category: the slow part on a large test set
    for cat, idx in tqdm(cats.items(), desc="metrics per category", unit="cat", leave=False, mininterval=1):
        types = {infos[i]["answer_type"] for i in idx}
        # yes/no P/R/F1 only for yes/no questions (an open answer "no lesion" also starts with "no")
        yn_questions = all(infos[i]["closed_type"] == "yes_no" for i in idx)
        all_yes_no = yn_questions and all(yes_no(first[i]) is not None for i in idx)
        res: dict = {"n": len(idx), "ids": [ids[i] for i in idx], "metrics": {}, "not_applicable": {}}
        for m, scores in per_sample.items():
            if applies(m, types, all_yes_no):
                res["metrics"][m] = entry([scores[i] for i in idx])
            else:
                res["not_applicable"][m] = APPLIES_TO[METRICS[m].applies_to]
        _yes_no_metrics(res, preds, first, idx, yn_questions, all_yes_no)
        if tok is not None:
            _coco_metrics(res, tok, idx, types == {"open"}, session, col)
        for m in HEADLINE:
            if m in res["metrics"]:
                res["metrics"][m]["ci"] = stats.bootstrap_ci(res["metrics"][m]["per_sample"], n_resamples=n_boot,
                                                             seed=seed)
        out[cat] = res
    for res in out.values():  # a backend that failed in any category is unavailable everywhere
        for m in list(res["metrics"]):
            if m in col.unavailable:
                del res["metrics"][m]
    return out, bert_info
