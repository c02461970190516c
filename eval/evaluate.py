"""Score one model's predictions.jsonl per question category, with CIs, per-sample scores and paired tests.

    result = evaluate_predictions("result/predictions/stage2/predictions.jsonl", "data/type_mapping.json", None)
    comparisons = compare_models({"base": r_base, "stage2": r_stage2})

Why this module exists: a single overall number hides where fine-tuning helped (yes/no vs modality vs
open-ended) and how sure we are. Every category gets every text metric, the headline metrics get a bootstrap
95% CI, and per-sample scores are kept (aligned by id) so `compare_models` can run paired tests.

Categories (a category with zero samples is left out):
  overall              every VQA question (task "vqa" or unset). Captions and grounding are scored separately:
                       a caption is not an answer and a grounding answer is a box, so mixing them in would
                       change "overall" with the share of those tasks.
  closed, closed/<t>   closed questions, by closed_type t in yes_no | modality | position | general
  open                 open-ended questions
  caption              task "caption" (text metrics)
  grounding            task "grounding" (box metrics, see below)
  region_classification, region_caption
                       the region tasks (a box in the question, a label/caption as answer; data_process/
                       grounding_sft.py, med_grit.py): text metrics, part of grounding work, never in overall
  dataset/<name>       per dataset (VQA and captions), when more than one dataset is present
  native/<field>/<v>   the dataset's own category (VQA-RAD question_type, SLAKE content_type, ...), VQA only
answer_type / closed_type / native fields come from type_mapping.json (data_process/data_trans.py); an id
missing there falls back to the prediction row's answer_type and data_trans' closed_type rules, and is counted
under result["data_issues"].

Several accepted answers (a row's `reference` may be a list; `answers` holds the record's meta.answers, e.g.
VQA-Med 2019 alternatives; medvl.metrics.references): per-sample metrics keep the best match over them, BLEU /
METEOR / CIDEr get them all as pycocoevalcap's multiple references, the first decides yes/no.

Which metric where (decided, and stated in the tables):
  * closed_accuracy: categories whose samples are all closed. yes/no precision/recall/F1: categories whose
    references are all yes/no.
  * BLEU-1..4: categories whose samples are all open-ended (open, caption, all-open native ones). BLEU of a
    correct one-word answer is meaningless (DESIGN.md), so a category holding closed answers gets
    "not applicable" with that reason instead of a number.
  * METEOR (the jar's corpus score), CIDEr (idf from the category's own references; needs >= 2 samples), ROUGE,
    string-overlap and BERTScore: every text category.
A metric that does not apply to a category is recorded under "not_applicable" with the reason. A metric whose
backend fails (no Java, a BERTScore model that will not load) raises MetricUnavailable, or with
allow_missing=True is recorded under "unavailable" with the reason. Neither is ever reported as 0.0.

Efficiency: per-sample metrics are computed once over all samples and averaged per category. pycocoevalcap
input is PTB-tokenized in one JVM call per model; BLEU and CIDEr are pure Python and run per category on the
tokenized subset; METEOR runs in one JVM per model (or one for all models, see `CocoSession`) whose
compute_score is called per category (the jar's EVAL is stateless: same numbers as a fresh JVM).

Grounding: boxes are parsed with the model family's own format (family from run_info.json unless given),
converted to pixels of the original image (medvl.families.parse_boxes), and compared with the best-matching
reference box (highest IoU over the sample's reference boxes, medvl.metrics.grounding.best_reference). The first
predicted box is the answer; an unparsable or degenerate box counts as missing. Reported: box rate, mean IoU
counting a missing box as 0 (headline), mean IoU over boxed samples only (biased, labelled), IoU > 0.5 rate,
centre inclusion rate, position match (samples whose label names a side or level), centre point error (boxed
samples only).

Coverage (eval/coverage.py): the test set is the type mapping's ids. Predictions that lack some of them (failed
in run_info.json, or missing) raise PartialCoverage naming the model and its counts; allow_partial=True scores
them, and evaluate_models then scores every model on the ids all of them answered.
"""
from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from tqdm import tqdm

from medvl.jsonio import DataError, iter_jsonl, read_json
from eval import coverage
from medvl.metrics import COCO_METRICS, DEFAULT_METRICS, TEXT_METRICS, closed, grounding, nlg, stats
from medvl.metrics.errors import MetricUnavailable
from medvl.metrics.normalize import yes_no
from medvl.metrics.references import best, best_of, flatten
from medvl.metrics.text import average
from medvl.categories import closed_type  # the rule type_mapping.json was written with

CLOSED_TYPES = ("yes_no", "modality", "position", "general")
# Region tasks (data_process/grounding_sft.py, med_grit.py) are grounding work: own categories, never in overall.
REGION_TASKS = ("region_classification", "region_caption")
BASE_CATEGORIES = ("overall", "closed", *(f"closed/{t}" for t in CLOSED_TYPES), "open", "caption", "grounding",
                   *REGION_TASKS)
PER_SAMPLE_TEXT = tuple(m for m in DEFAULT_METRICS if m in TEXT_METRICS)  # the registry's default set
BLEU = tuple(m for m in COCO_METRICS if m.startswith("bleu"))
YES_NO = ("yes_no_precision", "yes_no_recall", "yes_no_f1")
GROUNDING = ("box_rate", "mean_iou", "mean_iou_boxed_only", "iou_gt_0_5_rate", "centre_inclusion_rate",
             "position_match_rate", "mean_centre_point_error_px_boxed_only")
# Datasets whose left/right words name the image side as displayed (data_process/synth.py says so); every other
# dataset's labels ("left kidney") name the patient's side, shown on the viewer's right (radiological convention).
VIEWER_SIDE_DATASETS = ("synth",)
HEADLINE = ("closed_accuracy", "exact_match", "word_f1", "rouge_l", "bertscore_f1", "mean_iou")
# The native category fields data_process/data_trans.py writes (VQA-RAD question_type, SLAKE content_type,
# VQA-Med category; other datasets question_type). Other fields are not categories.
NATIVE_FIELDS = ("question_type", "content_type", "category")

# name -> (label, higher is better, definition). The one list tables and plots read.
METRIC_INFO: dict[str, tuple[str, bool, str]] = {
    "closed_accuracy": ("closed accuracy", True, "closed questions: yes/no answers matched by meaning "
                        "(medvl.metrics.normalize.yes_no), others by exact match after normalisation"),
    "yes_no_precision": ("yes/no precision", True, "precision of the class 'yes'; an answer neither yes nor no "
                         "counts as the wrong answer"),
    "yes_no_recall": ("yes/no recall", True, "recall of the class 'yes'"),
    "yes_no_f1": ("yes/no F1", True, "F1 of the class 'yes'"),
    "exact_match": ("exact match", True, "normalised prediction == normalised reference (lowercase, punctuation "
                    "and articles removed)"),
    "soft_match": ("soft match", True, "difflib SequenceMatcher ratio of the normalised strings"),
    "substring_match": ("substring", True, "normalised reference found in the prediction on word boundaries"),
    "word_overlap": ("word overlap", True, "share of distinct reference words found in the prediction"),
    "word_contain": ("word contain", True, "1 when every reference word occurs in the prediction"),
    "word_precision": ("word precision", True, "bag-of-words precision"),
    "word_recall": ("word recall", True, "bag-of-words recall"),
    "word_f1": ("token F1", True, "SQuAD-style bag-of-words F1 over normalised words"),
    "char_precision": ("char precision", True, "bag-of-characters precision (spaces excluded)"),
    "char_recall": ("char recall", True, "bag-of-characters recall"),
    "char_f1": ("char F1", True, "bag-of-characters F1"),
    "rouge_1": ("ROUGE-1", True, "rouge-score ROUGE-1 F, Porter stemmer, mean over samples"),
    "rouge_l": ("ROUGE-L", True, "rouge-score ROUGE-L F, Porter stemmer, mean over samples"),
    "bleu1": ("BLEU-1 (open)", True, "pycocoevalcap corpus BLEU-1 on PTB tokens; open-ended answers only"),
    "bleu2": ("BLEU-2 (open)", True, "pycocoevalcap corpus BLEU-2; open-ended answers only"),
    "bleu3": ("BLEU-3 (open)", True, "pycocoevalcap corpus BLEU-3; open-ended answers only"),
    "bleu4": ("BLEU-4 (open)", True, "pycocoevalcap corpus BLEU-4; open-ended answers only (a correct one-word "
              "answer has a meaningless BLEU-4)"),
    "meteor": ("METEOR", True, "METEOR 1.5 jar via pycocoevalcap, corpus score of the category"),
    "cider": ("CIDEr", True, "pycocoevalcap CIDEr-D (x10 scale); idf from the category's own references"),
    "bertscore_f1": ("BERTScore F1", True, "bert-score F1, mean over samples (model: see notes)"),
    "box_rate": ("box rate", True, "share of grounding samples with a parsable predicted box"),
    "mean_iou": ("mean IoU (missing box = 0)", True, "IoU of the first predicted box with the best-matching "
                 "reference box (highest IoU over the sample's reference boxes), a missing box counted as 0"),
    "mean_iou_boxed_only": ("mean IoU (boxed samples only)", True, "mean IoU over samples that produced a box; "
                            "biased upwards (silence is free), read with box rate"),
    "iou_gt_0_5_rate": ("IoU > 0.5 rate", True, "share of samples with IoU > 0.5 (missing box = miss)"),
    "centre_inclusion_rate": ("centre inclusion", True, "share whose predicted box centre lies in the reference box"),
    "position_match_rate": ("position match", True, "share of samples whose reference label names a side or level "
                            "(left/right, upper/lower, centre) where the predicted box lies there by image thirds "
                            "(medvl.metrics.grounding.position_match; missing box = miss); left/right are the "
                            "patient's side except for the viewer-side datasets named in the notes"),
    "mean_centre_point_error_px_boxed_only": ("centre error px (boxed only)", False, "mean distance in pixels of "
                                              "the original image between box centres, boxed samples only"),
}


# ------------------------------------------------------------------------------------------------ inputs
def load_type_mapping(type_mapping: str | os.PathLike | Mapping | None) -> dict[str, dict]:
    """{id: entry} from a path or a dict. Entries that are not per-id dicts (e.g. a "categories" summary) are skipped."""
    if type_mapping is None:
        return {}
    data = read_json(type_mapping) if not isinstance(type_mapping, Mapping) else type_mapping
    if not isinstance(data, Mapping):
        raise DataError(f"{type_mapping}: expected a JSON object {{id: {{answer_type, ...}}}}")
    return {str(k): dict(v) for k, v in data.items() if isinstance(v, Mapping) and "answer_type" in v}


def accepted_references(row: dict, where) -> list[str]:
    """Every accepted answer of a text row: `reference` (a string or a list) then `answers` (the record's
    meta.answers, e.g. VQA-Med 2019 alternatives), duplicates dropped, the first first. DataError when there is
    none or one is empty or not a string."""
    forms: list = []
    for value in (row.get("reference"), row.get("answers")):
        forms += value if isinstance(value, list) else [] if value is None else [value]
    if not forms or any(not isinstance(f, str) or not f.strip() for f in forms):
        raise DataError(f"{where}: id {row['id']!r}: empty or missing reference answer (reference "
                        f"{row.get('reference')!r}, answers {row.get('answers')!r}); it cannot be scored")
    return list(dict.fromkeys(forms))


def load_predictions(pred_path: str | os.PathLike) -> list[dict]:
    """Rows of a predictions.jsonl, validated: a bad row raises DataError naming the line/id and the reason."""
    rows, seen = [], {}
    for lineno, row in enumerate(iter_jsonl(pred_path), 1):
        if not isinstance(row, dict) or "id" not in row:
            raise DataError(f"{pred_path}: line {lineno} has no 'id'")
        rid = str(row["id"])
        if rid in seen:
            raise DataError(f"{pred_path}: id {rid!r} on lines {seen[rid]} and {lineno}; ids must be unique")
        seen[rid] = lineno
        if not isinstance(row.get("prediction"), str):
            raise DataError(f"{pred_path}: id {rid!r}: 'prediction' must be a string, got {row.get('prediction')!r}")
        rows.append({**row, "id": rid, "task": row.get("task") or "vqa"})
    if not rows:
        raise DataError(f"{pred_path}: no predictions")
    return rows


def read_run_info(pred_path: str | os.PathLike) -> dict | None:
    p = Path(pred_path).parent / "run_info.json"
    return read_json(p) if p.exists() else None


def pixel_budget_of(run_info: dict | None) -> dict | None:
    """{"min_pixels", "max_pixels", "source"}: the range the model's images were resized into, from run_info.json
    (its pixel_budget, else the image processor's size of older runs); None when run_info does not say."""
    ri = run_info or {}
    for source, d, lo, hi in (("pixel_budget", ri.get("pixel_budget"), "min_pixels", "max_pixels"),
                              ("image_processor.size", (ri.get("image_processor") or {}).get("size"),
                               "shortest_edge", "longest_edge")):
        if isinstance(d, Mapping) and d.get(lo) and d.get(hi):
            return {"min_pixels": int(d[lo]), "max_pixels": int(d[hi]), "source": f"run_info.json {source}"}
    return None


def resolve_family(family, run_info: dict | None, pred_path):
    """ModelFamily from an explicit name/object, else run_info.json's "family"; None when neither says."""
    from medvl.families import ModelFamily, get_family

    if isinstance(family, ModelFamily):
        return family
    name = family or (run_info or {}).get("family")
    return get_family(name) if name else None


# ------------------------------------------------------------------------------------------------ categories
def _sample_info(row: dict, mapping: dict[str, dict], issues: Counter) -> dict:
    """answer_type, closed_type, dataset and native fields of one VQA/caption row (mapping first)."""
    entry = mapping.get(row["id"])
    if entry is None:
        issues["missing_from_type_mapping"] += 1
        entry = {}
    answer_type = str(entry.get("answer_type") or row.get("answer_type") or "").lower()
    if not answer_type and row["task"] == "caption":
        answer_type = "open"
    if answer_type not in ("closed", "open"):
        raise DataError(f"id {row['id']!r}: no answer_type ('closed'/'open') in type_mapping.json or the prediction row")
    ctype = entry.get("closed_type") if answer_type == "closed" else None
    if answer_type == "closed" and ctype not in CLOSED_TYPES:
        ctype = closed_type(row.get("question") or "", row["reference"], set())
        issues["closed_type_inferred"] += 1
    native = {k: v for k, v in entry.items() if k in NATIVE_FIELDS and isinstance(v, (str, int, float))}
    return {"answer_type": answer_type, "closed_type": ctype, "native": native,
            "dataset": str(entry.get("dataset") or row.get("dataset") or "unknown")}


def assign_categories(text_rows: list[dict], mapping: dict[str, dict]) -> tuple[dict[str, list[int]], list[dict], Counter]:
    """({category: indices into text_rows}, per-row info, data issues)."""
    issues: Counter = Counter()
    infos = [_sample_info(r, mapping, issues) for r in text_rows]
    cats: dict[str, list[int]] = {}
    datasets = {i["dataset"] for r, i in zip(text_rows, infos) if r["task"] not in REGION_TASKS}
    for k, (row, info) in enumerate(zip(text_rows, infos)):
        names = []
        if row["task"] == "vqa":
            names += ["overall", info["answer_type"]]
            if info["closed_type"]:
                names.append(f"closed/{info['closed_type']}")
            names += [f"native/{f}/{v}" for f, v in sorted(info["native"].items())]
        else:  # caption, region tasks, ...: each task its own category, never in overall
            names.append(row["task"])
        if len(datasets) > 1 and row["task"] not in REGION_TASKS:  # region tasks belong to grounding
            names.append(f"dataset/{info['dataset']}")
        for n in names:
            cats.setdefault(n, []).append(k)
    return dict(sorted(cats.items(), key=lambda kv: category_order(kv[0]))), infos, issues


def category_order(name: str) -> tuple:
    if name in BASE_CATEGORIES:
        return (0, BASE_CATEGORIES.index(name), name)
    return (1 if name.startswith("dataset/") else 2, 0, name)


# ------------------------------------------------------------------------------------------------ backends
def _java_check(metric: str) -> None:
    if shutil.which("java") is None:
        raise MetricUnavailable(metric, "no `java` executable on PATH; pycocoevalcap runs PTBTokenizer and METEOR as "
                                        "Java jars (install a JRE, e.g. apt-get install default-jre-headless)")


class CocoSession:
    """One METEOR JVM reused for every category (and, when shared, every model); close() always stops it.

    Why: the jar takes ~7 s to start and load its paraphrase table, and the EVAL call is stateless, so one
    process gives the same numbers as one per category. pycocoevalcap's Meteor keeps a lock that it does
    not release on error and that its __del__ waits on; we release it and stop the process ourselves.
    """

    def __init__(self):
        self._meteor = None

    def meteor(self, gts: dict, res: dict) -> tuple[float, list[float]]:
        _java_check("meteor")
        nlg.check_meteor_fields(gts, res)
        if self._meteor is None:
            from pycocoevalcap.meteor.meteor import Meteor

            try:
                self._meteor = Meteor()
            except OSError as e:
                raise MetricUnavailable("meteor", f"could not start the METEOR jar: {e!r}") from e
        m = self._meteor
        try:
            score, scores = m.compute_score(gts, res)
            return float(score), [float(s) for s in scores]
        except (OSError, ValueError) as e:
            status = m.meteor_p.poll()
            self.close()
            raise MetricUnavailable("meteor", f"METEOR jar failed ({e!r}); exit status {status}") from e

    def close(self) -> None:
        m, self._meteor = self._meteor, None
        if m is None:
            return
        if m.lock.locked():
            m.lock.release()
        try:
            m.meteor_p.stdin.close()
        except OSError:
            pass
        m.meteor_p.kill()
        m.meteor_p.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _subset(d: dict, idx: Sequence[int]) -> dict:
    return {k: d[i] for k, i in enumerate(idx)}


def _tokenize(preds, refs, ids) -> tuple[dict, dict]:
    try:
        return nlg.coco_tokenize_pairs(preds, refs)
    except ValueError as e:  # name the id, not the list index
        m = re.search(r"sample (\d+)", str(e))
        where = f" (id {ids[int(m.group(1))]!r})" if m and int(m.group(1)) < len(ids) else ""
        raise DataError(f"{e}{where}") from None


# ------------------------------------------------------------------------------------------------ scoring
class _Collector:
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


def _entry(per_sample: list[float], score: float | None = None, **extra) -> dict:
    return {"score": average(per_sample) if score is None else float(score), "per_sample": list(per_sample), **extra}


def _text_categories(rows, infos, cats, *, bertscore_model, bertscore_layers, session, n_boot,
                     seed, col: _Collector) -> tuple[dict, dict | None]:
    preds = [r["prediction"] for r in rows]
    refs = [r["references"] for r in rows]  # every accepted answer: best match per sample, multi-ref BLEU/CIDEr
    first = [r[0] for r in refs]  # decides yes/no (accepted forms of one answer agree on it)
    ids = [r["id"] for r in rows]
    per_sample = {m: best_of(TEXT_METRICS[m], preds, refs) for m in PER_SAMPLE_TEXT}

    bert_info = None
    if bertscore_model:
        from medvl.metrics.bertscore import bertscore_f1

        fp, fr, owner = flatten(preds, refs)
        got = col.run(["bertscore_f1"], lambda: bertscore_f1(fp, fr, model=bertscore_model,
                                                            num_layers=bertscore_layers))
        if got is not None:
            per_sample["bertscore_f1"], bert_info = best(got[0], owner, len(preds)), got[1]

    tok = col.run(COCO_METRICS, lambda: _tokenize(preds, refs, ids))
    out = {}
    # METEOR (a JVM call) and CIDEr run per category: the slow part on a large test set
    for cat, idx in tqdm(cats.items(), desc="metrics per category", unit="cat", leave=False, mininterval=1):
        sub_types = {infos[i]["answer_type"] for i in idx}
        is_closed, is_open = sub_types == {"closed"}, sub_types == {"open"}
        # yes/no P/R/F1 only for yes/no questions (an open answer "no lesion" also starts with "no")
        yn_questions = all(infos[i]["closed_type"] == "yes_no" for i in idx)
        all_yes_no = yn_questions and all(yes_no(first[i]) is not None for i in idx)
        res: dict = {"n": len(idx), "ids": [ids[i] for i in idx], "metrics": {}, "not_applicable": {}}
        mets = res["metrics"]
        for m, scores in per_sample.items():
            if m == "closed_accuracy" and not is_closed:
                res["not_applicable"][m] = "only for categories of closed questions"
                continue
            mets[m] = _entry([scores[i] for i in idx])
        if all_yes_no:
            yn = closed.yes_no_prf([preds[i] for i in idx], [first[i] for i in idx])
            res["yes_no"] = yn
            for m, key in zip(YES_NO, ("precision", "recall", "f1")):
                if yn[key] is None:
                    res["not_applicable"][m] = f"undefined: no 'yes' {'predictions' if key == 'precision' else 'references'}"
                else:
                    mets[m] = {"score": float(yn[key]), "per_sample": None}
        else:
            why = ("a reference is not an English yes/no word (medvl.metrics.normalize.yes_no)" if yn_questions
                   else "only for categories of yes/no questions")
            for m in YES_NO:
                res["not_applicable"][m] = why
        if tok is not None:
            gts, rs = _subset(tok[0], idx), _subset(tok[1], idx)
            if is_open:
                for m, v in nlg.coco_from_tokens(gts, rs, BLEU).items():
                    mets[m] = _entry(v["per_sample"], v["score"])
            else:
                for m in BLEU:
                    res["not_applicable"][m] = ("closed answers: BLEU of a correct one-word answer is meaningless; "
                                                "BLEU is reported on open-ended answers only")
            if len(idx) >= 2:
                v = nlg.coco_from_tokens(gts, rs, ["cider"])["cider"]
                mets["cider"] = _entry(v["per_sample"], v["score"])
            else:
                res["not_applicable"]["cider"] = "CIDEr needs >= 2 samples (idf comes from the category's references)"
            got = col.run(["meteor"], lambda: session.meteor(gts, rs))
            if got is not None:
                mets["meteor"] = _entry(got[1], got[0], note="corpus METEOR of the jar (not the mean of per_sample)")
        for m in HEADLINE:
            if m in mets:
                mets[m]["ci"] = stats.bootstrap_ci(mets[m]["per_sample"], n_resamples=n_boot, seed=seed)
        out[cat] = res
    for res in out.values():  # a backend that failed in any category is unavailable everywhere
        for m in list(res["metrics"]):
            if m in col.unavailable:
                del res["metrics"][m]
    return out, bert_info


def _ref_box(r: dict, ref: dict, size, pred_path, issues: Counter) -> list[float]:
    """One reference box of a grounding row in pixels of the row's image_size."""
    xyxy = [float(v) for v in ref.get("xyxy") or []]
    if len(xyxy) != 4 or xyxy[2] < xyxy[0] or xyxy[3] < xyxy[1]:
        raise DataError(f"{pred_path}: grounding id {r['id']!r}: reference box {ref.get('xyxy')!r} is not "
                        "[x1, y1, x2, y2] with x2 >= x1, y2 >= y1")
    rsize = ref.get("image_size") or size
    if list(rsize) != list(size):  # reference stored for another size of the same image: rescale
        sx, sy = size[0] / rsize[0], size[1] / rsize[1]
        xyxy = [xyxy[0] * sx, xyxy[1] * sy, xyxy[2] * sx, xyxy[3] * sy]
        issues["ref_box_rescaled"] += 1
    return xyxy


def _position_match(rows: list[dict], preds: list, mapping: dict[str, dict]) -> dict:
    """position_match per sample, each with its dataset's lateral convention (VIEWER_SIDE_DATASETS)."""
    per_sample = []
    for r, box in zip(rows, preds):
        dataset = (mapping.get(r["id"]) or {}).get("dataset") or r.get("dataset")
        lateral = "viewer" if dataset in VIEWER_SIDE_DATASETS else "patient"
        per_sample += grounding.position_match([box], [r["image_size"]], [r["reference"] or ""],
                                               lateral=lateral)["per_sample"]
    applicable = [x for x in per_sample if x is not None]
    return {"per_sample": per_sample, "n_applicable": len(applicable),
            "rate": sum(applicable) / len(applicable) if applicable else None}


def _grounding_category(rows: list[dict], family, *, n_boot: int, seed: int, pred_path,
                        mapping: dict[str, dict]) -> dict:
    from medvl.families import parse_boxes

    if family is None:
        raise DataError(f"{pred_path}: grounding predictions need the model family (pass family= or keep "
                        "run_info.json with its 'family' next to predictions.jsonl)")
    preds, refs, issues = [], [], Counter()
    for r in rows:
        size, insize = r.get("image_size"), r.get("input_size")
        if not size or not insize or not r.get("ref_boxes"):
            raise DataError(f"{pred_path}: grounding id {r['id']!r} lacks image_size, input_size or ref_boxes")
        candidates = [_ref_box(r, ref, size, pred_path, issues) for ref in r["ref_boxes"]]
        boxes = parse_boxes(family, r["prediction"], size, insize)
        box = boxes[0][1] if boxes else None
        if box is not None and not (box[2] >= box[0] and box[3] >= box[1]):
            issues["degenerate_pred_box_counted_missing"] += 1
            box = None
        if len(boxes) > 1:
            issues["several_pred_boxes_first_used"] += 1
        if len(candidates) > 1:
            issues["several_ref_boxes_best_match_used"] += 1
        preds.append(box)
        refs.append(candidates[grounding.best_reference(box, candidates)])
    g = grounding.grounding_scores(preds, refs)
    ps = g["per_sample"]
    mets = {
        "box_rate": _entry([float(b) for b in ps["boxed"]]),
        "mean_iou": _entry(ps["iou"]),
        "iou_gt_0_5_rate": _entry(ps["iou_gt_0_5"]),
        "centre_inclusion_rate": _entry(ps["centre_inside"]),
    }
    mets["mean_iou"]["ci"] = stats.bootstrap_ci(ps["iou"], n_resamples=n_boot, seed=seed)
    na = {}
    pos = _position_match(rows, preds, mapping)
    if pos["n_applicable"]:  # per_sample None where the label names no side or level
        mets["position_match_rate"] = {"score": pos["rate"], "per_sample": pos["per_sample"],
                                       "note": f"over the {pos['n_applicable']} of {g['n']} samples whose reference "
                                               "names a side or level"}
    else:
        na["position_match_rate"] = "no reference label names a side or level (left/right, upper/lower, centre)"
    if g["n_boxed"]:  # per_sample stays aligned with ids: None where no box was produced
        note = f"over the {g['n_boxed']} of {g['n']} samples with a box"
        mets["mean_iou_boxed_only"] = {"score": g["mean_iou_boxed_only"], "note": note,
                                       "per_sample": [x if b else None for x, b in zip(ps["iou"], ps["boxed"])]}
        mets["mean_centre_point_error_px_boxed_only"] = {"score": g["mean_centre_point_error_px_boxed_only"],
                                                         "per_sample": ps["centre_point_error_px"], "note": note}
    else:
        na["mean_iou_boxed_only"] = na["mean_centre_point_error_px_boxed_only"] = "no sample produced a box"
    return {"n": g["n"], "n_boxed": g["n_boxed"], "ids": [r["id"] for r in rows], "metrics": mets,
            "not_applicable": na, "issues": dict(issues), "family": family.name, "box_format": family.box_format,
            "per_sample_boxes": [{"pred_xyxy": p, "ref_xyxy": q} for p, q in zip(preds, refs)]}


def evaluate_predictions(pred_path: str | os.PathLike, type_mapping, family=None, *, bertscore_model: str | None = None,
                         bertscore_layers: int | None = None, allow_missing: bool = False, n_boot: int = 1000,
                         seed: int = 0, session: CocoSession | None = None, model_name: str | None = None,
                         allow_partial: bool = False, only_ids: set[str] | None = None) -> dict:
    """All metrics of one predictions.jsonl, per category (see the module docstring).

    Predictions that cover less than the type mapping's ids raise PartialCoverage unless allow_partial;
    only_ids scores just those ids (evaluate_models: the ids every model answered).

    type_mapping: path to type_mapping.json, or its dict. family: registry name / ModelFamily / None (read
    run_info.json). session: a shared CocoSession (one METEOR JVM for several models); None opens and closes one.
    Returns {"model", "pred_path", "family", "run_info", "n_predictions", "categories": {cat: {"n", "ids",
    "metrics": {name: {"score", "per_sample", ["ci"], ["note"]}}, "not_applicable": {name: reason},
    "unavailable": {name: reason}, ...}}, "unavailable", "bertscore", "perplexity", "data_issues", "settings"}.
    """
    pred_path = Path(pred_path)
    rows = load_predictions(pred_path)
    run_info = read_run_info(pred_path)
    fam = resolve_family(family, run_info, pred_path)
    mapping = load_type_mapping(type_mapping)
    name = model_name or pred_path.parent.name
    cov = coverage.coverage((r["id"] for r in rows), mapping, run_info)
    coverage.check({name: cov}, allow_partial)
    n_predictions = len(rows)
    if only_ids is not None:
        rows = [r for r in rows if r["id"] in only_ids]
        if not rows:
            raise DataError(f"{pred_path}: none of its ids is among the ids every model answered")
        if cov:
            cov["n_compared"] = len(rows)
    text_rows = [r for r in rows if r["task"] != "grounding"]
    ground_rows = [r for r in rows if r["task"] == "grounding"]
    for r in text_rows:
        r["references"] = accepted_references(r, pred_path)
    col = _Collector(allow_missing)
    categories, bert_info, issues = {}, None, Counter()
    own = session is None
    session = session or CocoSession()
    try:
        if text_rows:
            cats, infos, issues = assign_categories(text_rows, mapping)
            if mapping and issues["missing_from_type_mapping"] == len(text_rows):
                raise DataError(f"{pred_path}: none of its ids is in the type mapping ({len(mapping)} ids); "
                                "is it the type_mapping.json of this test set?")
            categories, bert_info = _text_categories(
                text_rows, infos, cats, bertscore_model=bertscore_model, bertscore_layers=bertscore_layers,
                session=session, n_boot=n_boot, seed=seed, col=col)
    finally:
        if own:
            session.close()
    if ground_rows:
        categories["grounding"] = _grounding_category(ground_rows, fam, n_boot=n_boot, seed=seed, pred_path=pred_path,
                                                      mapping=mapping)
    text_metric_names = set(PER_SAMPLE_TEXT) | set(COCO_METRICS) | {"bertscore_f1"}
    for cat, res in categories.items():
        res["unavailable"] = {m: why for m, why in col.unavailable.items() if cat != "grounding" and m in text_metric_names}
    ppl_path = pred_path.parent / "perplexity.json"
    return {
        "model": name, "pred_path": str(pred_path), "coverage": cov, "pixel_budget": pixel_budget_of(run_info),
        "family": fam.name if fam else None, "run_info": run_info, "n_predictions": n_predictions,
        "n_text": len(text_rows), "n_grounding": len(ground_rows),
        "categories": dict(sorted(categories.items(), key=lambda kv: category_order(kv[0]))),
        "unavailable": dict(col.unavailable), "bertscore": bert_info,
        "bertscore_requested": {"model": bertscore_model, "num_layers": bertscore_layers} if bertscore_model else None,
        "perplexity": read_json(ppl_path) if ppl_path.exists() else None,
        "data_issues": dict(issues),
        "settings": {"n_boot": n_boot, "seed": seed, "confidence": 0.95, "allow_missing": allow_missing,
                     "allow_partial": allow_partial},
    }


def evaluate_models(pred_paths: Mapping[str, str | os.PathLike], type_mapping, *, default_family=None,
                    allow_partial: bool = False, **kw) -> dict:
    """{model: evaluate_predictions(...)} in the given order, sharing one METEOR JVM across models.

    default_family is used only for a model whose run_info.json names no family (it never overrides one).
    Coverage is checked for every model before any is scored. With allow_partial, models whose ids differ are
    all scored on the ids every one of them answered (result["coverage"]["n_compared"]).
    """
    mapping = load_type_mapping(type_mapping)
    ids = {name: {r["id"] for r in load_predictions(path)} for name, path in pred_paths.items()}
    coverage.check({name: coverage.coverage(ids[name], mapping, read_run_info(path))
                    for name, path in pred_paths.items()}, allow_partial)
    common = set.intersection(*ids.values()) if ids else set()
    only = common if any(s != common for s in ids.values()) else None
    out = {}
    with CocoSession() as session:
        for name, path in tqdm(pred_paths.items(), desc="metrics", unit="model", mininterval=1):
            known = (read_run_info(path) or {}).get("family")
            out[name] = evaluate_predictions(path, mapping, None if known else default_family, session=session,
                                             model_name=name, allow_partial=allow_partial, only_ids=only, **kw)
    return out


# ------------------------------------------------------------------------------------------------ comparisons
def headline_metric(category_result: dict) -> str | None:
    """The metric a category is compared on: closed accuracy, else mean IoU (grounding), else token F1."""
    mets = category_result["metrics"]
    for m in ("closed_accuracy", "mean_iou", "word_f1"):
        if m in mets and mets[m].get("per_sample") is not None:
            return m
    return None


def compare_models(results_by_model: Mapping[str, dict], *, metric: str | None = None, n_resamples: int = 10000,
                   seed: int = 0) -> dict:
    """Paired test of each model against the first (the base) on each category's headline metric.

    Scores are paired by sample id (only ids both models answered). stats.paired_test picks exact McNemar for
    0/1 scores and a paired bootstrap otherwise. Returns {"base", "by_model": {model: {category: test dict
    with "metric", or {"skipped": reason}}}}.
    """
    names = list(results_by_model)
    if not names:
        raise ValueError("no models to compare")
    base = results_by_model[names[0]]
    out: dict = {"base": names[0], "by_model": {}}
    for name in names[1:]:
        res, per_cat = results_by_model[name], {}
        for cat, bcat in base["categories"].items():
            mcat = res["categories"].get(cat)
            if mcat is None:
                continue
            m = metric or headline_metric(bcat)
            if m is None or m not in mcat["metrics"] or m not in bcat["metrics"]:
                per_cat[cat] = {"metric": m, "skipped": f"{m} not available for both models"}
                continue
            a = dict(zip(bcat["ids"], bcat["metrics"][m]["per_sample"] or []))
            b = dict(zip(mcat["ids"], mcat["metrics"][m]["per_sample"] or []))
            common = [i for i in bcat["ids"] if a.get(i) is not None and b.get(i) is not None]
            if len(common) < 2:
                per_cat[cat] = {"metric": m, "skipped": f"{len(common)} paired sample(s), a test needs >= 2"}
                continue
            t = stats.paired_test([a[i] for i in common], [b[i] for i in common], n_resamples=n_resamples, seed=seed)
            per_cat[cat] = {"metric": m, **t}
        out["by_model"][name] = per_cat
    return out
