"""One image-root rule (medvl.paths.resolve_inside) in every stage: conversion, validation/training, the report.

A record names `../outside/x.png`, `link.png` (a symlink inside the root to a file outside it) or `sub/x.png` (a
symlinked folder inside the root leading outside): each is refused as image_outside_root by the converter, by
validation (the preprocessing training and generation use) and by the report, which shows the reason on the card
instead of embedding the file. A plain image under the root works in all three.
"""
from __future__ import annotations

import json
import os

import pytest

from tests.conftest import write_image

ESCAPES = {"escape": "../outside/x.png", "link": "link.png", "dirlink": "sub/x.png"}


@pytest.fixture
def tree(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    write_image(root / "ok.png", size=(40, 30), seed=1)
    write_image(outside / "x.png", size=(40, 30), seed=2)  # the "secret": must not be read by any stage
    os.symlink(outside / "x.png", root / "link.png")
    os.symlink(outside, root / "sub")
    return root


def _row(rid, image):
    return {"id": rid, "image": image, "conversations": [{"from": "human", "value": "<image>\nIs it?"},
                                                         {"from": "gpt", "value": "yes"}]}


def test_rule_resolves_links(tree):
    from medvl.paths import OutsideRoot, resolve_inside

    assert resolve_inside(tree, "ok.png") == (tree / "ok.png").resolve()
    for name in ESCAPES.values():
        with pytest.raises(OutsideRoot) as e:
            resolve_inside(tree, name)
        assert e.value.reason == "image_outside_root" and str(tree.parent / "outside" / "x.png") in str(e.value)
    assert resolve_inside(tree, "link.png", allow_outside=True) == tree.parent / "outside" / "x.png"


def test_converter_refuses_escapes(tree, tmp_path):
    from data_process import llava_med

    raw = tmp_path / "instruct.jsonl"
    raw.write_text("".join(json.dumps(_row(rid, name)) + "\n" for rid, name in [("ok", "ok.png"), *ESCAPES.items()]))
    rows, rep = llava_med.convert(raw, tree, kind="instruct", show_progress=False)
    assert set(rep["rejected"]) == {"image_outside_root"}, rep["rejected"]
    assert sorted(rep["rejected"]["image_outside_root"]) == sorted(ESCAPES)
    assert [r["image"] for r in rows] == [str((tree / "ok.png").resolve())]


def test_validation_refuses_escapes(tree, tiny_models):
    from data_process.validate import validate_records
    from medvl.loading import load_processor

    proc = load_processor(str(tiny_models["qwen2_vl"]), image_root=str(tree), max_len=512)
    recs = [_row("ok", "ok.png"), *(_row(rid, name) for rid, name in ESCAPES.items())]
    kept, rep = validate_records(recs, proc, progress=False)
    assert [r["id"] for r in kept] == ["ok"]
    assert sorted(rep.rejected["image_outside_root"]) == sorted(ESCAPES) and len(rep.rejected) == 1
    assert f"leaves the image root {tree.resolve()} (it resolves to {tree.parent / 'outside' / 'x.png'})" \
        in rep.details["link"]


def test_report_shows_reason_instead_of_the_file(tree, tmp_path):
    from eval.gallery import gallery_samples
    from eval.report_html import _card

    pred = tmp_path / "pred" / "m" / "predictions.jsonl"
    pred.parent.mkdir(parents=True)
    ids = ["ok", *ESCAPES]
    pred.write_text("".join(json.dumps({"id": i, "prediction": "yes", "reference": "yes", "question": "Is it?"}) + "\n"
                            for i in ids))
    results = {"m": {"pred_path": str(pred), "run_info": None, "categories": {}}}
    records = [_row("ok", "ok.png"), *(_row(rid, name) for rid, name in ESCAPES.items())]
    samples, images, info = gallery_samples(results, records, image_root=str(tree), progress=False)
    assert len(images) == 1  # only ok.png is embedded
    by = {s["id"]: s for s in samples}
    assert by["ok"]["image"] == 0
    for rid in ESCAPES:
        card = _card(by[rid])
        assert by[rid]["image"] is None and "<img" not in card
        assert "image not shown: image_outside_root" in card and "leaves the image root" in card
    assert sorted(info["unreadable_images"]) == sorted(ESCAPES)
