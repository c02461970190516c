"""data_process.split (train/val by image) and data_process.captions (Stage-1 captions from VQA records): on the real
VQA-RAD and SLAKE files (../shared/data) and on hand-made records; both CLIs run as `python -m` from another cwd."""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from data_process import captions, slake, split, vqa_rad
from data_process.validate import validate_records
from medvl.jsonio import DataError
from medvl.schema import image_list, make_record, record_problems

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rad_train(shared_data):
    root = shared_data / "vqa_rad"
    records, _ = vqa_rad.convert(root / "VQA_RAD Dataset Public.json", root / "VQA_RAD Image Folder", split="train",
                                 show_progress=False)
    return records


@pytest.fixture(scope="module")
def slake_train(shared_data):
    root = shared_data / "slake_sample"
    records, _ = slake.convert(root / "train.json", root / "imgs", show_progress=False)
    return records


def _rec(rid, image="a.jpg", q="Is there a fracture?", a="yes", **meta):
    return make_record(rid, image, q, a, dict({"dataset": "t", "split": "train"}, **meta))


def _images(records):
    return {img for r in records for img in image_list(r)}


def _run(module, args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


# ------------------------------------------------------------------------------------------------------- split

def test_split_real_vqa_rad_by_image(rad_train):
    train, val, s = split.split_records(rad_train, 0.1, seed=0)
    n_images = len(_images(rad_train))
    assert n_images == 313
    assert not _images(train) & _images(val)  # no image on both sides
    assert len(_images(val)) == math.floor(0.1 * n_images + 0.5) == 31  # the fraction is of images
    assert len(train) + len(val) == len(rad_train)  # nothing dropped, nothing doubled
    ids = [r["id"] for r in train + val]
    assert len(set(ids)) == len(ids) and set(ids) == {r["id"] for r in rad_train}
    assert {r["meta"]["split"] for r in train} == {"train"} and {r["meta"]["split"] for r in val} == {"val"}
    assert s["train"] == {"records": len(train), "images": n_images - 31} and s["val"]["images"] == 31
    assert all(r["meta"]["split"] == "train" for r in rad_train)  # the input records are not changed
    # every organ (the strata of VQA-RAD) is represented in val
    assert {r["meta"]["organ"] for r in val} == {"head", "chest", "abdomen"}


def test_split_is_deterministic_and_order_free(rad_train):
    _, val, _ = split.split_records(rad_train, 0.1, seed=0)
    shuffled = list(rad_train)
    random.Random(3).shuffle(shuffled)
    _, val2, _ = split.split_records(shuffled, 0.1, seed=0)
    assert {r["id"] for r in val} == {r["id"] for r in val2}
    _, val3, _ = split.split_records(rad_train, 0.1, seed=1)
    assert {r["id"] for r in val3} != {r["id"] for r in val}
    train_a, _, _ = split.split_records(rad_train, 0.1, seed=0)
    assert [r["id"] for r in train_a] == [r["id"] for r in rad_train if r["id"] not in {v["id"] for v in val}]


def test_split_mixed_datasets_puts_each_in_val(rad_train, slake_train):
    train, val, _ = split.split_records(rad_train + slake_train, 0.1, seed=0)
    assert {r["meta"]["dataset"] for r in val} == {"vqa_rad", "slake"}
    assert not _images(train) & _images(val)
    assert len(train) + len(val) == len(rad_train) + len(slake_train)


@pytest.mark.parametrize("n,frac,expected", [(2, 0.1, 1), (3, 0.5, 2), (10, 0.25, 3), (10, 0.35, 4), (7, 0.9, 6),
                                             (40, 0.1, 4)])
def test_split_fraction_rounds_half_up_and_keeps_both_sides(n, frac, expected):
    # 3 questions per image, two datasets so the strata share the total
    recs = [_rec(f"r{i}-{k}", image=f"img{i}.jpg", q=f"Is there a thing {k}?", dataset="ab"[i % 2])
            for i in range(n) for k in range(3)]
    train, val, _ = split.split_records(recs, frac, seed=0)
    assert len(_images(val)) == expected and len(_images(train)) == n - expected
    assert len(val) == 3 * expected and len(train) + len(val) == len(recs)


def test_split_groups_multi_image_and_text_only_records():
    recs = [_rec("a1", "a.jpg"), _rec("a2", "a.jpg"), _rec("b1", "b.jpg"),
            make_record("ab", ["a.jpg", "b.jpg"], "Which is larger?", "left", {"dataset": "t"}),  # joins a and b
            _rec("c1", "c.jpg"), _rec("c2", "c.jpg")]
    recs += [make_record(f"txt{i}", None, f"What is {i}?", "x", {"dataset": "t"}) for i in range(4)]
    for seed in range(10):
        train, val, s = split.split_records(recs, 0.5, seed=seed)
        sides = {r["id"]: side for side, rs in (("train", train), ("val", val)) for r in rs}
        assert sides["a1"] == sides["a2"] == sides["b1"] == sides["ab"] and sides["c1"] == sides["c2"]
        assert len(sides) == len(recs) and s["groups"] == 6 and s["text_only"] == 4  # a+b, c, 4 text-only
        assert len(val) and len(train)


def test_split_by_id_splits_records():
    recs = [_rec(f"r{i}", image="one.jpg", q=f"Is there a thing {i}?") for i in range(20)]
    with pytest.raises(DataError, match="need at least 2"):  # one image: by image cannot split
        split.split_records(recs, 0.1)
    train, val, s = split.split_records(recs, 0.1, by="id")
    assert len(val) == 2 and len(train) == 18 and s["groups"] == 20


def test_split_cli_from_another_cwd(rad_train, tmp_path):
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "vqa_rad_train.json").write_text(json.dumps(rad_train))
    args = ["--input", "data/vqa_rad_train.json", "--val_fraction", "0.1", "--seed", "0",
            "--train_out", "data/train.json", "--val_out", "data/val.jsonl"]
    r = _run("data_process.split", args, work)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout
    train = json.loads((work / "data" / "train.json").read_text())
    val = [json.loads(line) for line in (work / "data" / "val.jsonl").read_text().splitlines()]
    assert len(train) + len(val) == len(rad_train) and not _images(train) & _images(val)
    assert f"train {len(train)} records / 282 images, val {len(val)} records / 31 images" in lines[0]
    again = _run("data_process.split", args, work)
    assert again.returncode == 0 and json.loads((work / "data" / "train.json").read_text()) == train
    assert not list((work / "data").glob(".*.tmp"))  # atomic writes leave no temp files


@pytest.mark.parametrize("bad,message", [
    ({"id": "x2", "image": "b.jpg", "conversations": []}, "record #1 (id 'x2'): missing or empty 'conversations'"),
    ("not a record", "record #1: record is a str"),
    (_rec("x1", "c.jpg", q="Other?"), "record #1 (id 'x1'): repeated id"),
    (_rec("x3", "c.jpg", split="test"), "record #1 (id 'x3'): is a test-split record"),
])
def test_split_cli_refuses_bad_input_in_one_line(tmp_path, bad, message):
    (tmp_path / "in.json").write_text(json.dumps([_rec("x1", "a.jpg"), bad, _rec("x4", "d.jpg")]))
    r = _run("data_process.split", ["--input", "in.json", "--train_out", "t.json", "--val_out", "v.json"], tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: in.json: ") and message in r.stderr, r.stderr
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "v.json").exists()


def test_split_cli_include_test_and_argument_errors(tmp_path):
    (tmp_path / "in.json").write_text(json.dumps([_rec("x1", "a.jpg", split="test"), _rec("x2", "b.jpg")]))
    base = ["--input", "in.json", "--train_out", "t.json", "--val_out", "v.json"]
    assert _run("data_process.split", [*base, "--include_test"], tmp_path).returncode == 0
    assert len(json.loads((tmp_path / "v.json").read_text())) == 1
    r = _run("data_process.split", [*base, "--val_fraction", "1.5"], tmp_path)
    assert r.returncode == 2 and "--val_fraction 1.5" in r.stderr
    (tmp_path / "one.json").write_text(json.dumps([_rec("x1", "a.jpg"), _rec("x2", "a.jpg", q="Is it?")]))
    r = _run("data_process.split", ["--input", "one.json", "--train_out", "t.json", "--val_out", "v.json"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: one.json: 1 image group(s): need at least 2 to put one on each side")


# ---------------------------------------------------------------------------------------------------- captions

def test_captions_real_vqa_rad(rad_train):
    caps, stats = captions.build_captions(rad_train)
    images = _images(rad_train)
    assert len(caps) == len(images) == stats["images"] == 313  # one record per image
    assert {c["image"] for c in caps} == images
    assert len({c["id"] for c in caps}) == len(caps) and caps[0]["id"].startswith("vqa_rad-cap-synpic")
    assert all(record_problems(c) == [] for c in caps)
    organ = {r["image"]: r["meta"]["organ"] for r in rad_train}
    for c in caps:
        question, answer = c["conversations"][0]["value"], c["conversations"][1]["value"]
        assert question.startswith("<image>\n") and question.split("\n", 1)[1] in captions.PROMPTS
        assert f"of the {organ[c['image']]}" in answer  # VQA-RAD keeps the organ
        assert c["meta"]["task"] == "caption" and c["meta"]["question_type"] == "caption"
        assert set(c["meta"]["source_ids"]) == {r["id"] for r in rad_train if r["image"] == c["image"]}
    assert len({c["conversations"][0]["value"] for c in caps}) > 1  # several prompt variants are used
    assert captions.build_captions(rad_train) == (caps, stats)  # deterministic
    # a known image: its yes/no answers became statements, modality taken from "What kind of scan is this? CT"
    with_statements = [c for c in caps if "There is no " in c["conversations"][1]["value"]]
    assert len(with_statements) > 50 and any(c["meta"]["modality"] == "CT" for c in caps)


def test_captions_real_slake_mention_modality_and_organ(slake_train):
    caps, _ = captions.build_captions(slake_train)
    assert len(caps) == 24 and len({c["id"] for c in caps}) == 24
    assert {c["id"] for c in caps} >= {"slake-cap-xmlab1-source"}  # every SLAKE image is source.jpg
    for c in caps:
        recs = [r for r in slake_train if r["image"] == c["image"]]
        answer, meta = c["conversations"][1]["value"], c["meta"]
        assert meta["modality"] in {r["meta"]["modality"] for r in recs}
        assert meta["organ"] in {r["meta"]["organ"] for r in recs}
        assert answer.startswith(f"{meta['modality']} image of the {meta['organ']}")
        for r in recs:  # "Does the picture contain liver?" -> yes / no
            q = r["conversations"][0]["value"]
            if q.endswith("Does the picture contain liver?"):
                yes = r["conversations"][1]["value"].lower() == "yes"
                assert ("The image contains liver." if yes else "The image does not contain liver.") in answer


def test_captions_train_through_the_real_encoding(slake_train, rad_train, tiny_models):
    from medvl.loading import load_processor

    caps = captions.build_captions(slake_train)[0] + captions.build_captions(rad_train)[0][:20]
    proc = load_processor(str(tiny_models["qwen2_vl"]), max_len=1024, max_pixels=64 * 28 * 28)
    kept, rep = validate_records(caps, proc, progress=False)
    assert rep.kept == len(caps) and rep.n_rejected == 0, rep.as_dict()


@pytest.mark.parametrize("question,answer,expected", [
    ("Is there a fracture?", "yes", "There is a fracture."),
    ("is there a pleural effusion ", "No", "There is no pleural effusion."),
    ("Are there enlarged lymph nodes?", "no", "There are no enlarged lymph nodes."),
    ("Does the picture contain liver?", "Yes", "The image contains liver."),
    ("Does this image show a mass?", "no", "The image does not show a mass."),
    ("Is there any abnormality?", "yes", None),  # "There is any abnormality." is not a sentence
    ("Is there a fracture or dislocation?", "no", None),  # choice
    ("Is there not a mass?", "yes", None),  # negation
    ("Is there a mass?", "left", None),  # not a yes/no answer
    ("Is the heart enlarged?", "yes", None),  # not a safe form
])
def test_statement_rules(question, answer, expected):
    got = captions.statement(question, answer)
    assert (got[1] if got else None) == expected


def test_captions_handmade_rules():
    recs = [_rec("a1", "/d/a.jpg", "Is there a mass?", "yes", organ="chest"),
            _rec("a2", "/d/a.jpg", "Is there a mass?", "no", organ="chest"),  # contradicts a1: neither is used
            _rec("a3", "/d/a.jpg", "What type of imaging does this not represent?", "ultrasound",
                 answer_type="open", question_type="MODALITY"),  # negated question: not the modality
            _rec("a4", "/d/a.jpg", "In what plane is this image?", "Axial", answer_type="open", question_type="PLANE"),
            _rec("b1", "/e/a.jpg", "Is this a CT scan?", "yes", answer_type="closed", question_type="MODALITY"),
            _rec("c1", "/d/c.jpg", "What is it?", "a thing", answer_type="open"),  # nothing to say
            make_record("t1", None, "What is 2?", "two", {"dataset": "t"}),
            make_record("m1", ["/d/a.jpg", "/d/c.jpg"], "Which?", "left", {"dataset": "t"})]
    caps, stats = captions.build_captions(recs)
    by_id = {c["id"]: c["conversations"][1]["value"] for c in caps}
    assert by_id == {"t-cap-d-a": "Image of the chest, axial plane.", "t-cap-e-a": "CT image."}
    assert stats["statements_conflicting"] == 1 and stats["skipped_no_facts"] == 1
    assert stats["skipped_text_only"] == 1 and stats["skipped_multi_image"] == 1
    with pytest.raises(DataError, match=r"input: record #0 \(id 'x'\): is a test-split record"):
        captions.build_captions([_rec("x", split="test")])
    assert len(captions.build_captions([_rec("x", split="test", organ="head")], include_test=True)[0]) == 1


def test_captions_cli_from_another_cwd(rad_train, slake_train, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "vqa_rad_train.json").write_text(json.dumps(rad_train))
    (tmp_path / "data" / "slake.jsonl").write_text("".join(json.dumps(r) + "\n" for r in slake_train))
    r = _run("data_process.captions", ["--input", "data/vqa_rad_train.json", "data/slake.jsonl",
                                       "--out", "data/captions.json"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1 and r.stdout.startswith("337 caption records for 337 images from ")
    caps = json.loads((tmp_path / "data" / "captions.json").read_text())
    assert len(caps) == 337 and Counter(c["meta"]["dataset"] for c in caps) == {"vqa_rad": 313, "slake": 24}
    # bad input: one line naming the file and the record
    (tmp_path / "bad.json").write_text(json.dumps([_rec("ok"), {"id": "b", "image": "x.jpg",
                                                                "conversations": [{"from": "human", "value": "hi"}]}]))
    r = _run("data_process.captions", ["--input", "bad.json", "--out", "c.json"], tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: bad.json: record #1 (id 'b'): ") and not (tmp_path / "c.json").exists()
