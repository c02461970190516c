"""Grounding scores over pixel boxes [x1, y1, x2, y2] (absolute pixels of the same image, y pointing down).

Why both IoU means: averaging IoU only over samples that produced a box rewards a model for staying silent
when unsure (selection bias: silence costs nothing). `grounding_scores` therefore reports the box rate, the mean
IoU counting a missing box as 0 (`mean_iou`), and, clearly named, the mean over boxed samples only
(`mean_iou_boxed_only`). Convert every model's box format to absolute pixels of the original image *before*
calling these (Qwen2-VL 0-1000 relative and Qwen2.5-VL resized-absolute coordinates are not comparable).

Geometry conventions: coordinates are continuous (area = (x2-x1)*(y2-y1), no +1 pixel); a box needs
x2 >= x1 and y2 >= y1; a point on a box edge is inside; IoU is 0 when the union has zero area.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from medvl.metrics.normalize import tokens

Box = Sequence[float]


def _box(b: Box, what: str) -> tuple[float, float, float, float]:
    if b is None or len(b) != 4:
        raise ValueError(f"{what}: expected a box [x1, y1, x2, y2], got {b!r}")
    x1, y1, x2, y2 = (float(v) for v in b)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"{what}: box has non-finite coordinates {b!r}")
    if x2 < x1 or y2 < y1:
        raise ValueError(f"{what}: box {b!r} has x2 < x1 or y2 < y1 (expected [x1, y1, x2, y2])")
    return x1, y1, x2, y2


def scale_box(xyxy: Box, from_size, to_size) -> list[float]:
    """A box stored in pixels of `from_size` (w, h) in pixels of `to_size`; unchanged (as floats) when from_size
    is missing or the same."""
    if not from_size or list(from_size) == list(to_size):
        return [float(v) for v in xyxy]
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return [float(xyxy[0]) * sx, float(xyxy[1]) * sy, float(xyxy[2]) * sx, float(xyxy[3]) * sy]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ax1, ay1, ax2, ay2 = _box(a, "box a")
    bx1, by1, bx2, by2 = _box(b, "box b")
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def box_centre(box: Box) -> tuple[float, float]:
    x1, y1, x2, y2 = _box(box, "box")
    return (x1 + x2) / 2.0, (y1 + y2) / 2.0


def centre_inside(pred: Box, ref: Box) -> bool:
    """Whether the centre of `pred` lies inside `ref` (edges included)."""
    cx, cy = box_centre(pred)
    x1, y1, x2, y2 = _box(ref, "reference box")
    return x1 <= cx <= x2 and y1 <= cy <= y2


def centre_point_error(pred: Box, ref: Box) -> float:
    """Euclidean distance in pixels between the two box centres."""
    (px, py), (rx, ry) = box_centre(pred), box_centre(ref)
    return math.hypot(px - rx, py - ry)


def best_reference(pred: Optional[Box], refs: Sequence[Box]) -> int:
    """Index of the reference box a prediction is scored against: the highest IoU, among equal IoU (no overlap
    with any) the nearest centre, the first on a full tie or when there is no prediction.

    Why: a label with several boxes (both kidneys, two lesions) is found when the model boxes any one of them;
    comparing with the first box only would call a correct box wrong.
    """
    if not refs:
        raise ValueError("no reference box")
    if pred is None:
        return 0
    keys = [(iou(pred, r), -centre_point_error(pred, r)) for r in refs]
    return keys.index(max(keys))


def grounding_scores(preds: Sequence[Optional[Box]], refs: Sequence[Box]) -> dict:
    """All box metrics for one set of samples; `preds[i] is None` means the model produced no box.

    Keys (rates and means over all n samples unless the name says otherwise):
      n, n_boxed, box_rate                  share of samples with a predicted box
      mean_iou                              missing box counted as IoU 0  (the headline number)
      mean_iou_boxed_only                   over boxed samples only (None if no box) - biased, for diagnosis
      iou_gt_0_5_rate                       share with IoU > 0.5 (a missing box is a miss)
      centre_inclusion_rate                 share whose predicted centre is inside the reference box (missing = no)
      mean_centre_point_error_px_boxed_only mean centre distance in pixels over boxed samples (None if none):
                                            a missing box has no centre, so it cannot enter this mean; read it
                                            together with box_rate
      per_sample                            {"iou", "boxed", "iou_gt_0_5", "centre_inside", "centre_point_error_px"}
                                            lists (the last has None for missing boxes)
    """
    if len(preds) != len(refs):
        raise ValueError(f"preds and refs differ in length: {len(preds)} vs {len(refs)}")
    if not refs:
        raise ValueError("no samples to score")
    ious, boxed, inside, cpe = [], [], [], []
    for i, (p, r) in enumerate(zip(preds, refs)):
        _box(r, f"sample {i} reference")
        if p is None:
            ious.append(0.0), boxed.append(False), inside.append(0.0), cpe.append(None)
            continue
        _box(p, f"sample {i} prediction")
        ious.append(iou(p, r))
        boxed.append(True)
        inside.append(float(centre_inside(p, r)))
        cpe.append(centre_point_error(p, r))
    n, k = len(refs), sum(boxed)
    iou_arr = np.asarray(ious)
    hits = (iou_arr > 0.5).astype(float)
    return {
        "n": n, "n_boxed": k, "box_rate": k / n,
        "mean_iou": float(iou_arr.mean()),
        "mean_iou_boxed_only": float(iou_arr[np.asarray(boxed)].mean()) if k else None,
        "iou_gt_0_5_rate": float(hits.mean()),
        "centre_inclusion_rate": float(np.mean(inside)),
        "mean_centre_point_error_px_boxed_only": float(np.mean([c for c in cpe if c is not None])) if k else None,
        "per_sample": {"iou": ious, "boxed": boxed, "iou_gt_0_5": hits.tolist(), "centre_inside": inside,
                       "centre_point_error_px": cpe},
    }


# --------------------------------------------------------------------------- position words

_HORIZONTAL = {"left": "left", "right": "right"}
_VERTICAL = {"upper": "upper", "top": "upper", "superior": "upper", "lower": "lower", "bottom": "lower", "inferior": "lower"}
_CENTRE = {"centre", "center", "central", "middle", "midline"}
_LATERAL = ("viewer", "patient")


def position_word(box: Box, image_size: Sequence[float], *, lateral: str = "viewer") -> str:
    """Where a box lies in its image, from its centre against the image thirds.

    Each axis is cut into thirds: centre x < w/3 -> "left", x > 2w/3 -> "right", else centre; y < h/3 ->
    "upper", y > 2h/3 -> "lower", else centre (y grows downwards; a centre exactly on a third line counts as
    centre). The words combine as "upper left", "lower", "right", ...; "centre" when both axes are central.
    `lateral="viewer"` names left/right as seen on the image; `lateral="patient"` swaps them for images in
    radiological display convention (patient's right on the viewer's left: chest X-ray, axial CT/MRI).
    """
    if lateral not in _LATERAL:
        raise ValueError(f"lateral must be one of {_LATERAL}, got {lateral!r}")
    w, h = (float(v) for v in image_size)
    if not (w > 0 and h > 0):
        raise ValueError(f"image_size must be positive (w, h), got {image_size!r}")
    cx, cy = box_centre(box)
    horiz = "left" if cx < w / 3 else "right" if cx > 2 * w / 3 else None
    if horiz and lateral == "patient":
        horiz = "right" if horiz == "left" else "left"
    vert = "upper" if cy < h / 3 else "lower" if cy > 2 * h / 3 else None
    return " ".join(x for x in (vert, horiz) if x) or "centre"


def position_words_in_text(text: str) -> dict:
    """The position a reference answer states, per axis: {"vertical": ..., "horizontal": ...} (None = unstated).

    Synonyms: top/superior -> upper, bottom/inferior -> lower. An axis named both ways ("left and right")
    is unstated (ambiguous). A centre word (centre, center, central, middle, midline) sets every axis that
    no other word names, so "middle" is centre/centre and "upper middle" is upper/centre.
    """
    words = tokens(text)
    h = {_HORIZONTAL[w] for w in words if w in _HORIZONTAL}
    v = {_VERTICAL[w] for w in words if w in _VERTICAL}
    centre = any(w in _CENTRE for w in words)
    axes = {"vertical": next(iter(v)) if len(v) == 1 else None, "horizontal": next(iter(h)) if len(h) == 1 else None}
    if centre:
        for axis, named in (("vertical", v), ("horizontal", h)):
            if axes[axis] is None and not named:
                axes[axis] = "centre"
    return axes


def position_match(preds: Sequence[Optional[Box]], image_sizes: Sequence[Sequence[float]],
                   ref_answers: Sequence[str], *, lateral: str) -> dict:
    """Whether each predicted box lies where the reference answer says (e.g. "left upper lobe").

    Per sample: None when the answer states no position (not applicable), 0.0 when the box is missing or
    disagrees on any stated axis, 1.0 otherwise. `lateral` must be chosen per dataset ("viewer" or
    "patient", see `position_word`): anatomical answers ("left lung") usually mean the patient's side.
    Returns {"per_sample", "rate" (over applicable samples, None if none), "n_applicable"}.
    """
    if not (len(preds) == len(image_sizes) == len(ref_answers)):
        raise ValueError("preds, image_sizes and ref_answers differ in length")
    out: list[Optional[float]] = []
    for i, (p, size, ans) in enumerate(zip(preds, image_sizes, ref_answers)):
        want = position_words_in_text(ans)
        if want["vertical"] is None and want["horizontal"] is None:
            out.append(None)
            continue
        if p is None:
            out.append(0.0)
            continue
        got = position_word(p, size, lateral=lateral).split()
        got_v = next((g for g in got if g in ("upper", "lower")), "centre")
        got_h = next((g for g in got if g in ("left", "right")), "centre")
        ok = (want["vertical"] in (None, got_v)) and (want["horizontal"] in (None, got_h))
        out.append(float(ok))
    applicable = [x for x in out if x is not None]
    return {"per_sample": out, "rate": float(np.mean(applicable)) if applicable else None,
            "n_applicable": len(applicable)}
