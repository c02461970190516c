"""The report's gallery data: per sample, the image thumbnail, question, reference, each model's answer marked right
or wrong by RULES, and the reference and predicted boxes in pixels of the original image.

Right / wrong per sample, per model: closed questions by closed accuracy; open questions and captions by exact match
(token F1 shown beside it); grounding by IoU > 0.5 of the first box (a missing box is wrong). The scores are the
per-sample scores the tables averaged (no metric is recomputed).
"""
from __future__ import annotations

import base64
import io
import os
import random
from pathlib import Path
from typing import Mapping, Sequence

from tqdm import tqdm

from medvl.encoding import load_image
from medvl.families import parse_boxes
from medvl.jsonio import DataError
from medvl.metrics.grounding import scale_box
from medvl.paths import OutsideRoot, resolve_inside
from medvl.schema import image_list
from eval.old_results import upgrade_result, upgrade_results
from eval.predictions import load_predictions, resolve_family
from eval.report_assets import MODEL_COLOURS

RULES = ("closed questions: closed accuracy; open questions and captions: exact match after normalisation "
         "(token F1 shown); grounding: IoU > 0.5 of the first predicted box with the reference box (no box = wrong)")



def per_sample_scores(result: dict) -> dict[str, dict[str, float]]:
    """{id: {metric: score}} from one model's evaluate_predictions result (the scores the tables averaged)."""
    out: dict[str, dict[str, float]] = {}
    cats = upgrade_result(result)["categories"]

    def take(cat: str, metric: str, key: str) -> None:
        c = cats.get(cat)
        entry = c["metrics"].get(metric) if c else None
        if entry and entry.get("per_sample") is not None:
            for sid, v in zip(c["ids"], entry["per_sample"]):
                if v is not None:
                    out.setdefault(sid, {})[key] = float(v)

    take("closed", "closed_accuracy", "closed_accuracy")
    for cat in ("overall", "caption"):
        take(cat, "exact_match", "exact_match")
        take(cat, "token_f1", "token_f1")
    take("grounding", "mean_iou", "iou")
    take("grounding", "iou_gt_0_5_rate", "iou_gt_0_5")
    take("grounding", "box_rate", "boxed")
    return out


def verdict(scores: dict[str, float] | None) -> tuple[bool | None, str]:
    """(right?, detail) by RULES; (None, reason) when the sample was not scored for this model."""
    if not scores:
        return None, "not scored"
    if "closed_accuracy" in scores:
        return scores["closed_accuracy"] >= 1.0, "closed accuracy"
    if "iou_gt_0_5" in scores:
        if not scores.get("boxed"):
            return False, "no parsable box"
        return scores["iou_gt_0_5"] >= 1.0, f"IoU {scores.get('iou', 0.0):.2f}"
    if "exact_match" in scores:
        return scores["exact_match"] >= 1.0, f"token F1 {scores.get('token_f1', 0.0):.2f}"
    return None, "not scored"


def sample_categories(results: Mapping[str, dict]) -> dict[str, list[str]]:
    """{id: [categories]} over every model (a model may lack a sample another has)."""
    out: dict[str, list[str]] = {}
    for res in results.values():
        for cat, c in res["categories"].items():
            for sid in c["ids"]:
                cats = out.setdefault(sid, [])
                if cat not in cats:
                    cats.append(cat)
    return out


def _pred_path(result: dict, metrics_json: Path | None) -> Path:
    p = Path(result["pred_path"])
    if p.exists() or metrics_json is None:
        return p
    alt = metrics_json.parent / "predictions" / result["model"] / "predictions.jsonl"  # result dir moved
    return alt if alt.exists() else p


def _size(value) -> tuple[float, float] | None:
    """(w, h) when value is two positive numbers; None otherwise (a [0, 0] size scales nothing: no box drawn)."""
    try:
        w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (w, h) if w > 0 and h > 0 else None


def thumbnail(path: str, sample_id: str, max_side: int) -> tuple[str, tuple[int, int]]:
    """(data: URI of a JPEG thumbnail, original (w, h)). Same image reader as training (medvl.encoding)."""
    im = load_image(path, sample_id)
    size = im.size
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), size


def image_file(name: str, image_root: str | None, allow_outside_root: bool = False) -> str:
    """The file a record's image names, by the rule validation and training use (medvl.encoding.image_path):
    a relative name resolves under image_root or raises OutsideRoot; an absolute one is taken as written."""
    if os.path.isabs(name) or not image_root:
        return name
    return str(resolve_inside(image_root, name, allow_outside_root))


def gallery_samples(results: Mapping[str, dict], records: Sequence[dict], *, metrics_json: Path | None = None,
                    image_root: str | None = None, allow_outside_root: bool = False, max_samples: int | None = 1000,
                    seed: int = 0, thumb_side: int = 224, progress: bool = True) -> tuple[list[dict], list[str], dict]:
    """(samples, images as data URIs, info) for the gallery.

    Every id that any model answered, in test_data order; above max_samples a seeded random subset (stated in the
    page). An image that cannot be read, one outside the image root (never embedded: the page is meant to be
    sent), or an id missing from test_data is shown as such on its card and counted in info (never dropped
    silently)."""
    results = upgrade_results(results)  # an older results file says word_f1
    models = list(results)
    rows = {m: {r["id"]: r for r in load_predictions(_pred_path(results[m], metrics_json))} for m in models}
    families = {m: resolve_family(None, results[m].get("run_info"), None) for m in models}
    scores = {m: per_sample_scores(results[m]) for m in models}
    cats = sample_categories(results)
    by_id = {str(r.get("id")): r for r in records}
    answered = {sid for m in models for sid in rows[m]}
    if by_id and not answered & set(by_id):
        raise DataError(f"none of the {len(answered)} predicted ids is in the test data ({len(by_id)} records); "
                        "is --test_data the file the predictions were made from?")
    order = [sid for sid in by_id if sid in answered] + sorted(answered - set(by_id))
    info = {"n_answered": len(order), "missing_from_test_data": sorted(answered - set(by_id)), "unreadable_images": {},
            "max_samples": max_samples, "seed": seed, "boxes_not_parsed": []}
    if max_samples is not None and len(order) > max_samples:
        keep = set(random.Random(seed).sample(order, max_samples))
        order = [sid for sid in order if sid in keep]
    images, image_index, samples = [], {}, []
    for sid in tqdm(order, desc="report gallery", disable=not progress, mininterval=1):
        rec = by_id.get(sid) or {}
        any_row = next(rows[m][sid] for m in models if sid in rows[m])
        meta = rec.get("meta") or {}
        paths = image_list(rec) if rec else []
        img, size = None, None
        if paths:
            p = paths[0]
            if p not in image_index:
                try:
                    uri, size = thumbnail(image_file(p, image_root, allow_outside_root), sid, thumb_side)
                    image_index[p] = (len(images), size)
                    images.append(uri)
                except OutsideRoot as e:
                    image_index[p] = (None, f"{e.reason}: {e}")
                except Exception as e:  # SampleError names the sample and the reason; shown on the card
                    image_index[p] = (None, str(e))
            idx, size = image_index[p]
            if idx is None:
                info["unreadable_images"][sid] = size
                size = None
            img = idx
        size = _size(size or any_row.get("image_size"))
        ref_boxes = []
        if size:
            for b in meta.get("boxes") or any_row.get("ref_boxes") or []:
                if isinstance(b, dict) and len(b.get("xyxy") or []) == 4:
                    from_size = _size(b.get("image_size")) if b.get("image_size") is not None else size
                    if from_size:
                        ref_boxes.append({"label": b.get("label"), "xyxy": scale_box(b["xyxy"], from_size, size)})
                    else:
                        info["boxes_not_parsed"].append(f"reference:{sid}")
        answers = []
        for k, m in enumerate(models):
            row = rows[m].get(sid)
            ok, detail = verdict(scores[m].get(sid)) if row else (None, "no prediction")
            boxes = []
            row_size, input_size = (_size(row.get("image_size")), _size(row.get("input_size"))) if row else (None, None)
            if row and size and families[m] is not None and row_size and input_size:
                for label, xyxy in parse_boxes(families[m], row["prediction"], row_size, input_size):
                    boxes.append({"label": label, "xyxy": scale_box(xyxy, row_size, size)})
            elif row and any_row.get("task") == "grounding":
                info["boxes_not_parsed"].append(f"{m}:{sid}")
            answers.append({"model": m, "colour": MODEL_COLOURS[k % len(MODEL_COLOURS)],
                            "text": row["prediction"] if row else None, "ok": ok, "detail": detail, "boxes": boxes})
        samples.append({"id": sid, "question": any_row.get("question") or "", "reference": any_row.get("reference", ""),
                        "task": any_row.get("task", "vqa"), "dataset": str(meta.get("dataset") or any_row.get("dataset")
                                                                               or "unknown"),
                        "categories": cats.get(sid, []), "image": img, "size": size, "n_images": len(paths),
                        "image_error": info["unreadable_images"].get(sid),
                        "in_test_data": sid in by_id, "ref_boxes": ref_boxes, "answers": answers})
    return samples, images, info
