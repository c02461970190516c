"""Box metrics on hand-computed cases."""

import math

import pytest

from medvl.metrics import grounding as g


def test_iou_hand_computed():
    assert g.iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert g.iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert g.iou([0, 0, 10, 10], [5, 5, 15, 15]) == pytest.approx(25 / 175)
    assert g.iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert g.iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0       # touching edges
    assert g.iou([5, 5, 5, 5], [5, 5, 5, 5]) == 0.0            # zero-area union
    with pytest.raises(ValueError, match="x2 < x1"):
        g.iou([10, 0, 0, 10], [0, 0, 1, 1])


def test_centre_inclusion_and_point_error():
    assert g.centre_inside([8, 8, 12, 12], [0, 0, 10, 10])     # centre (10, 10) on the edge counts
    assert not g.centre_inside([10, 10, 14, 14], [0, 0, 10, 10])
    assert g.centre_point_error([0, 0, 10, 10], [6, 8, 16, 18]) == pytest.approx(10.0)  # (5,5)->(11,13): 6,8


def test_grounding_scores_missing_box_counts_as_zero():
    preds = [[0, 0, 10, 10], None, [5, 0, 15, 10], [100, 100, 110, 110]]
    refs = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]
    out = g.grounding_scores(preds, refs)
    ious = [1.0, 0.0, 1 / 3, 0.0]
    assert out["n"] == 4 and out["n_boxed"] == 3 and out["box_rate"] == 0.75
    assert out["per_sample"]["iou"] == pytest.approx(ious)
    assert out["mean_iou"] == pytest.approx(sum(ious) / 4)
    assert out["mean_iou_boxed_only"] == pytest.approx((1.0 + 1 / 3 + 0.0) / 3)
    assert out["iou_gt_0_5_rate"] == 0.25
    assert out["centre_inclusion_rate"] == pytest.approx(2 / 4)   # sample 2's centre (10,5) is on the edge
    cpe = [0.0, 5.0, math.hypot(100, 100)]
    assert out["mean_centre_point_error_px_boxed_only"] == pytest.approx(sum(cpe) / 3)
    assert out["per_sample"]["centre_point_error_px"][1] is None
    none = g.grounding_scores([None], [[0, 0, 1, 1]])
    assert none["mean_iou"] == 0.0 and none["mean_iou_boxed_only"] is None
    assert none["mean_centre_point_error_px_boxed_only"] is None
    with pytest.raises(ValueError, match="sample 0 reference"):
        g.grounding_scores([None], [None])


def test_position_word_thirds():
    size = (300, 300)
    assert g.position_word([0, 0, 30, 30], size) == "upper left"
    assert g.position_word([140, 140, 160, 160], size) == "centre"
    assert g.position_word([250, 140, 290, 160], size) == "right"
    assert g.position_word([140, 250, 160, 290], size) == "lower"
    assert g.position_word([80, 80, 120, 120], size) == "centre"           # centre exactly on x = w/3
    assert g.position_word([0, 0, 30, 30], size, lateral="patient") == "upper right"


def test_position_match():
    size = (300, 300)
    preds = [[0, 0, 30, 30], [250, 0, 290, 30], None, [0, 0, 30, 30], [140, 140, 160, 160]]
    answers = ["left upper lobe", "left upper lobe", "left", "the liver", "middle"]
    out = g.position_match(preds, [size] * 5, answers, lateral="viewer")
    assert out["per_sample"] == [1.0, 0.0, 0.0, None, 1.0]
    assert out["n_applicable"] == 4 and out["rate"] == 0.5
    # patient convention: "left lung" lies on the image's right
    assert g.position_match([[250, 100, 290, 200]], [size], ["left lung"], lateral="patient")["rate"] == 1.0
