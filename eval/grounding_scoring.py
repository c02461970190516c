"""Box metrics of one model's grounding answers (the "grounding" category).

Boxes are parsed with the model family's own format (family from run_info.json unless given), converted to pixels of
the original image (medvl.families.parse_boxes), and compared with the best-matching reference box (highest IoU over
the sample's reference boxes, medvl.metrics.grounding.best_reference). The first predicted box is the answer; an
unparsable or degenerate box counts as missing. Reported: box rate, mean IoU counting a missing box as 0 (headline),
mean IoU over boxed samples only (biased, labelled), IoU > 0.5 rate, centre inclusion rate, position match (samples
whose label names a side or level), centre point error (boxed samples only).
"""
from __future__ import annotations

from collections import Counter

from medvl.families import parse_boxes
from medvl.jsonio import DataError
from medvl.metrics import grounding, stats
from eval.text_scoring import entry

# Datasets whose left/right words name the image side as displayed (data_process/synth.py says so); every other
# dataset's labels ("left kidney") name the patient's side, shown on the viewer's right (radiological convention).
VIEWER_SIDE_DATASETS = ("synth",)


def _ref_box(r: dict, ref: dict, size, pred_path, issues: Counter) -> list[float]:
    """One reference box of a grounding row in pixels of the row's image_size."""
    xyxy = [float(v) for v in ref.get("xyxy") or []]
    if len(xyxy) != 4 or xyxy[2] < xyxy[0] or xyxy[3] < xyxy[1]:
        raise DataError(f"{pred_path}: grounding id {r['id']!r}: reference box {ref.get('xyxy')!r} is not "
                        "[x1, y1, x2, y2] with x2 >= x1, y2 >= y1")
    rsize = ref.get("image_size") or size
    if list(rsize) != list(size):  # reference stored for another size of the same image: rescale
        issues["ref_box_rescaled"] += 1
    return grounding.scale_box(xyxy, rsize, size)


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


def _boxes(rows: list[dict], family, pred_path) -> tuple[list, list, Counter]:
    """(first predicted box or None, best-matching reference box) per row, in pixels of the original image."""
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
    return preds, refs, issues


def grounding_category(rows: list[dict], family, *, n_boot: int, seed: int, pred_path,
                       mapping: dict[str, dict]) -> dict:
    """The "grounding" category of one model: {"n", "n_boxed", "ids", "metrics", "not_applicable", "issues",
    "family", "box_format", "per_sample_boxes"}."""
    if family is None:
        raise DataError(f"{pred_path}: grounding predictions need the model family (pass family= or keep "
                        "run_info.json with its 'family' next to predictions.jsonl)")
    preds, refs, issues = _boxes(rows, family, pred_path)
    g = grounding.grounding_scores(preds, refs)
    ps = g["per_sample"]
    mets = {
        "box_rate": entry([float(b) for b in ps["boxed"]]),
        "mean_iou": entry(ps["iou"]),
        "iou_gt_0_5_rate": entry(ps["iou_gt_0_5"]),
        "centre_inclusion_rate": entry(ps["centre_inside"]),
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
