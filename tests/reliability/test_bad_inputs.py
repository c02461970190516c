"""The bad-input corpus through the whole pipeline: conversion -> validation -> training -> evaluation.

At every step each record ends up kept or rejected with its id and reason (`in == kept + rejected`), and the
step completes. Raw input is LLaVA-Med-style JSONL (the converter that takes conversations as they are); records a
converter never emits (bad boxes, wrong tag counts, relative paths leaving the image root) join at validation.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from medvl.schema import make_record
from tests.reliability.corpus import HANDLED, REJECTED, write_images

ROOT = Path(__file__).resolve().parents[2]


def _row(rid, image, question="<image>\nIs there a lesion?", answer="yes"):
    return {"id": rid, "image": image, "conversations": [{"from": "human", "value": question},
                                                         {"from": "gpt", "value": answer}]}


def _grounding(rid, image, box, size=None):
    b = {"label": "lesion", "xyxy": box, **({"image_size": size} if size else {})}
    return make_record(rid, image, "Locate the lesion.", "lesion",
                       {"dataset": "corpus", "task": "grounding", "answer_type": "open", "boxes": [b]})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Raw LLaVA-Med-style JSONL + schema-level extras, and what each step must say about every id."""
    root = tmp_path_factory.mktemp("corpus")
    images = root / "images"
    img = {k: p.name for k, p in write_images(images).items()}
    (root / "elsewhere").mkdir()  # a real image outside the image root: refused for where it is, not for missing
    (root / "elsewhere" / "rgb.jpg").write_bytes((images / img["rgb"]).read_bytes())
    lines = [json.dumps(_row(f"ok-{k}", img[k], answer="yes" if i % 2 else "no")) for i, k in enumerate(HANDLED)]
    lines += [json.dumps(_row(f"img-{k}", img[k])) for k in REJECTED]
    lines += [
        json.dumps(_row("missing-image", "nope.jpg")),
        json.dumps(_row("two-tags", img["rgb"], "<image>\n<image>\nIs there a lesion?")),
        json.dumps(_row("no-tag", img["rgb"], "Is there a lesion?", "no")),  # a missing tag is added (counted)
        json.dumps(_row("empty-answer", img["rgb"], answer="")),
        json.dumps(_row("space-answer", img["rgb"], answer=" \t ")),
        json.dumps(_row("over-length", img["rgb"], "<image>\n" + "why is that " * 300)),
        json.dumps(_row("dup", img["rgb"])), json.dumps(_row("dup", img["rgb"])),  # the same row twice
        json.dumps(_row("dup-other", img["rgb"])), json.dumps(_row("dup-other", img["grayscale"], answer="no")),
        json.dumps(_row("escape", "../elsewhere/rgb.jpg")),
        json.dumps({"image": img["rgb"], "conversations": []}),  # no id
    ]
    raw = root / "llava_med_instruct_bad.jsonl"
    with open(raw, "wb") as f:
        f.write(("\n".join(lines[:5]) + "\n").encode())
        f.write(b'{"id": "latin1", "image": "rgb.jpg", "conversations": [{"from": "human", "value": "caf\xe9"}]}\n')
        f.write(b'{"id": "cut-json", "image": "rgb.jpg", "conversa\n')
        f.write(("\n".join(lines[5:]) + "\n").encode())
    n_lines = len(lines) + 2
    conv_rejected = {"image_not_found": ["missing-image"], "more_image_tags_than_images": ["two-tags"],
                     "empty_answer": ["empty-answer", "space-answer"], "duplicate_row": ["dup"],
                     "image_outside_root": ["escape"], "invalid_utf8": [f"{raw.name}:line 6"],
                     "malformed_json": [f"{raw.name}:line 7"], "missing_id": [f"{raw.name}#{n_lines - 1}"]}

    abs_rgb = str(images / img["rgb"])
    extras = [  # schema-level records (as another converter or a hand-made file would give them)
        _grounding("box-ok", abs_rgb, [4, 4, 20, 20], [48, 40]),
        _grounding("box-outside", abs_rgb, [30, 30, 90, 90], [48, 40]),
        _grounding("box-negative", abs_rgb, [20, 20, 10, 30], [48, 40]),
        _grounding("box-outside-real-image", abs_rgb, [100, 100, 150, 150]),  # no image_size: checked on decode
        make_record("tags-schema", abs_rgb, "<image>\n<image>\nIs it?", "yes", {"dataset": "corpus", "answer_type": "closed"}, add_image_tag=False),
        make_record("rel-escape", "../elsewhere/rgb.jpg", "Is it?", "yes", {"dataset": "corpus", "answer_type": "closed"}),
        make_record("ok-relative", img["grayscale"], "Is it?", "no", {"dataset": "corpus", "answer_type": "closed"}),
        make_record("ok-grayscale", abs_rgb, "Is it?", "no", {"dataset": "corpus", "answer_type": "closed"}),  # repeats a converted id
    ]
    return {"root": root, "images": images, "raw": raw, "n_lines": n_lines, "conv_rejected": conv_rejected,
            "extras": extras}


def _accounting(rep: dict, read_key="read", kept_key="converted") -> None:
    n_rej = sum(len(v) for v in rep["rejected"].values())
    assert rep[read_key] == rep[kept_key] + n_rej + sum(rep.get("skipped", {}).values()), rep


@pytest.fixture(scope="module")
def pipeline(corpus, tiny_models, tmp_path_factory):
    """Run all four steps once (module scope: ~30 s on 2 cores); the tests below read what each step wrote."""
    from data_process import convert, validate
    from eval.evaluate import evaluate_predictions
    from eval.generate import generate_for_model
    from eval.model_spec import ModelSpec
    from train.finetune import parse_args, run

    out = tmp_path_factory.mktemp("pipeline")
    model = str(tiny_models["qwen2_vl"])
    # 1. conversion (the CLI, streaming)
    conv = out / "converted.jsonl"
    assert convert.main(["llava_med", "--input", str(corpus["raw"]), "--image_root", str(corpus["images"]),
                         "--out", str(conv), "--kind", "instruct", "--no_progress"]) == 0
    conv_report = json.loads((out / "converted.report.json").read_text())
    # 2. validation (the CLI, streaming): converted records + schema-level extras + one broken line
    to_validate = out / "to_validate.jsonl"
    to_validate.write_text(conv.read_text() + "".join(json.dumps(r) + "\n" for r in corpus["extras"]) + "{oops\n")
    clean = out / "clean.json"
    validate.main(["--model", model, "--data", str(to_validate), "--out", str(clean), "--max_len", "256",
                   "--image_root", str(corpus["images"]), "--no_progress"])
    val_report = json.loads(clean.with_name(clean.stem + ".report.json").read_text())
    # 3. training straight on the unvalidated file: its own pre-step validation must reject the same records
    s = run(*parse_args(["--model_name_or_path", model, "--train_data", str(to_validate), "--output_dir", str(out / "s2"),
                         "--image_root", str(corpus["images"]), "--max_len", "256", "--stage", "2", "--max_steps", "3",
                         "--per_device_train_batch_size", "4", "--use_cpu", "--report_to", "none",
                         "--save_strategy", "no", "--logging_steps", "1", "--seed", "0",
                         "--dataloader_num_workers", "0"]))
    # 4. evaluation on the unvalidated file too: generation names what it cannot answer, scoring gets the rest
    pred = generate_for_model(ModelSpec.parse(f"stage2={model}+{out / 's2'}"), _read_lenient(to_validate),
                              out / "pred", batch_size=4, max_new_tokens=4, progress=False, num_workers=2)
    run_info = json.loads((pred.parent / "run_info.json").read_text())
    result = evaluate_predictions(pred, None, allow_missing=True, n_boot=20)
    return {"conv": conv_report, "conv_path": conv, "val": val_report, "clean": clean, "train": s,
            "run_info": run_info, "eval": result, "n_to_validate": len(to_validate.read_text().splitlines())}


def _read_lenient(path):
    from medvl.jsonio import read_records
    return read_records(path, bad_lines="yield")


def test_conversion_rejects_each_bad_row_by_name(pipeline, corpus):
    rep = pipeline["conv"]
    _accounting(rep)
    assert rep["read"] == corpus["n_lines"]
    assert rep["rejected"] == corpus["conv_rejected"]
    assert rep["notes"] == {"ids_disambiguated": 1, "image_tag_added": 1}
    ids = [json.loads(line)["id"] for line in pipeline["conv_path"].read_text().splitlines()]
    assert len(ids) == rep["converted"] and "dup-other-dup2" in ids
    # unreadable / oversized images exist on disk: the converter keeps them, validation decodes and refuses them
    assert {f"img-{k}" for k in REJECTED} <= set(ids) and {f"ok-{k}" for k in HANDLED} <= set(ids)


def test_validation_names_every_rejection(pipeline, corpus):
    rep = pipeline["val"]
    assert rep["input"] == pipeline["n_to_validate"] == rep["kept"] + rep["rejected"]
    by = {k: v["ids"] for k, v in rep["rejected_by_reason"].items()}
    want = {reason: [] for reason in set(REJECTED.values())}
    for kind, reason in REJECTED.items():
        want[reason].append(f"img-{kind}")
    want.update({"over_length": ["over-length"], "duplicate_id": ["ok-grayscale"], "image_outside_root": ["rel-escape"],
                 "box_outside_image": ["box-outside-real-image"], "malformed_json": ["to_validate.jsonl:line %d"
                                                                                    % pipeline["n_to_validate"]],
                 "malformed_record": ["box-outside", "box-negative", "tags-schema"]})
    assert {k: sorted(v) for k, v in by.items()} == {k: sorted(v) for k, v in want.items()}
    d = rep["details"]
    assert "lies outside the image" in d["box-outside"] and "non-positive size" in d["box-negative"]
    assert "2 '<image>' tags for 1 images" in d["tags-schema"] and "leaves the image root" in d["rel-escape"]
    assert "image_too_large" in d["img-bomb_warning_size"] and "> 89478485 pixels" in d["img-bomb_warning_size"]
    kept = {r["id"] for r in json.loads(pipeline["clean"].read_text())}
    assert {f"ok-{k}" for k in HANDLED} | {"box-ok", "ok-relative", "no-tag", "dup", "dup-other", "dup-other-dup2"} == kept


def test_training_completes_and_reports_the_same_rejections(pipeline):
    train_rep = pipeline["train"]["validation_reports"]["train"]
    val = pipeline["val"]
    assert (train_rep["input"], train_rep["kept"], train_rep["rejected"]) == (val["input"], val["kept"], val["rejected"])
    assert train_rep["rejected_by_reason"] == val["rejected_by_reason"]
    assert pipeline["train"]["train_metrics"]["train_loss"] > 0 and pipeline["train"]["failed_at_train_time"] == {}


def test_evaluation_names_what_it_cannot_answer(pipeline):
    info, result = pipeline["run_info"], pipeline["eval"]
    failed = info["failed"]
    assert info["n_records"] == pipeline["n_to_validate"] == info["skipped_already_done"] + info["generated"] + len(failed)
    reasons = {k: v.split(":")[0].split(" (")[0] for k, v in failed.items()}
    assert reasons["to_validate.jsonl:line %d" % pipeline["n_to_validate"]] == "malformed_json"
    assert reasons["ok-grayscale (#%d)" % (pipeline["n_to_validate"] - 2)] == "duplicate_id"
    for rid in ("box-outside", "box-negative", "tags-schema"):
        assert reasons[rid] == "malformed_record"
    for kind, reason in REJECTED.items():
        assert f"sample 'img-{kind}': {reason}" in failed[f"img-{kind}"]
    assert "box_outside_image" in failed["box-outside-real-image"]
    # generation has no length limit: the over-length record is answered; scoring sees exactly what was generated
    assert result["n_predictions"] == info["generated"] and result["n_grounding"] == 1
    assert result["n_text"] + result["n_grounding"] == info["generated"]


def test_outside_root_is_accepted_only_when_asked(corpus, tiny_models, tmp_path):
    from data_process import llava_med
    from medvl.loading import load_processor

    rows, rep = llava_med.convert(corpus["raw"], corpus["images"], kind="instruct", show_progress=False,
                                  allow_outside_root=True)
    assert "image_outside_root" not in rep["rejected"]
    escaped = next(r for r in rows if r["id"] == "escape")
    assert escaped["image"] == str((corpus["root"] / "elsewhere" / "rgb.jpg").resolve())
    rec = next(r for r in corpus["extras"] if r["id"] == "rel-escape")
    for allow in (False, True):
        proc = load_processor(str(tiny_models["qwen2_vl"]), image_root=str(corpus["images"]), allow_outside_root=allow)
        if allow:
            assert len(proc.encode(rec)) > 0
        else:
            with pytest.raises(ValueError, match="image_outside_root"):
                proc.encode(rec)


def test_handled_image_kinds_decode_to_rgb(tmp_path):
    from medvl.encoding import SampleError, load_image

    paths = write_images(tmp_path)
    for kind in HANDLED:
        im = load_image(paths[kind], kind)
        lo, hi = zip(*im.getextrema())
        assert im.mode == "RGB" and im.size == (48, 40), kind
        assert max(hi) - min(lo) > 100, (kind, im.getextrema())  # contrast survives (16-bit is rescaled, not clipped)
    for kind, reason in REJECTED.items():
        with pytest.raises(SampleError) as e:
            load_image(paths[kind], f"img-{kind}")
        assert e.value.reason == reason and e.value.sample_id == f"img-{kind}", kind


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    """Peak-RSS growth of a fresh process that meets both bombs: the header check refuses them before any pixel is
    decoded (with the pre-fix limit, twice PIL's, the smaller one was decoded: ~430 MB more peak RSS)."""
    paths = write_images(tmp_path)
    code = (f"import resource; from medvl.encoding import load_image, SampleError\n"
            f"before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"for p in [{str(paths['bomb_warning_size'])!r}, {str(paths['bomb_error_size'])!r}]:\n"
            f"    try: load_image(p, 'bomb')\n"
            f"    except SampleError as e: print(e.reason)\n"
            f"print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)")
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    *reasons, growth_mb = r.stdout.split()
    assert reasons == ["image_too_large", "image_too_large"]
    assert int(growth_mb) < 20, f"peak RSS grew {growth_mb} MB: the bomb was decoded"


def test_embedded_bomb_bytes_are_a_rejected_row(tmp_path):
    """HF exports (PathVQA, MedPix) carry image bytes: a bomb among them rejects its row instead of crashing."""
    from PIL import Image

    from data_process.conversion.hf_table import hf_image
    from data_process.conversion.image_paths import ImageResolver
    from data_process.conversion.image_store import ImageStore
    from tests.reliability.corpus import write_bomb_png

    side = int((Image.MAX_IMAGE_PIXELS * 2.02) ** 0.5) + 1
    data = write_bomb_png(tmp_path / "b.png", side, side).read_bytes()
    with pytest.raises(ValueError, match="undecodable_image"):
        hf_image({"bytes": data, "path": None}, ImageResolver(None), ImageStore(tmp_path / "store"))
    assert not any((tmp_path / "store").iterdir())
