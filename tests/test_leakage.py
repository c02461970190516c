"""Leakage audit: real VQA-RAD (its test images are train images), near-duplicate images, normalised QA pairs, the CLI
and data_trans --train_data."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from data_process import data_trans, leakage, vqa_rad
from medvl.jsonio import write_json
from medvl.schema import make_record
from tests.conftest import write_image

ROOT = Path(__file__).resolve().parents[1]


def rec(rid, image, question="Is there a fracture?", answer="yes", split="train", dataset="vqa_rad"):
    return make_record(rid, image, question, answer, {"dataset": dataset, "split": split})


@pytest.fixture(scope="module")
def rad_osf(shared_data, tmp_path_factory):
    rad = shared_data / "vqa_rad"
    records, _ = vqa_rad.convert([rad / "VQA_RAD Dataset Public.json"], rad / "VQA_RAD Image Folder",
                                 show_progress=False)
    path = tmp_path_factory.mktemp("leak") / "vqa_rad.json"
    write_json(path, records)
    return path, records


def test_vqa_rad_test_images_are_train_images(rad_osf):
    path, records = rad_osf
    t0 = time.perf_counter()
    report = leakage.audit_files([path], [path], show_progress=False)
    took = time.perf_counter() - t0
    s = report["summary"]
    # official split: 1797 train / 451 test questions; 202 of the 203 test images are also train images
    assert (report["train_records"], report["test_records"]) == (1797, 451)
    assert (s["test_images"], s["test_images_exact_in_train"], s["test_images_in_train"]) == (203, 202, 202)
    assert s["image_near"] == 0  # the 315 images are distinct: nothing within the threshold but the same bytes
    assert s["image_exact"] == s["test_records_overlapping"] == 446  # the 5 others: synpic23571.jpg
    by_id = {r["id"]: r for r in records}
    lonely = {r["id"] for r in records if r["meta"]["split"] == "test" and r["image"].endswith("synpic23571.jpg")}
    listed = {r["test_id"]: r for r in report["records"]}
    for rid in lonely:  # the one test image not in train: its records overlap by QA text at most
        assert "image_exact" not in listed.get(rid, {"reasons": []})["reasons"]
    for entry in report["records"]:
        assert by_id[entry["test_id"]]["meta"]["split"] == "test"
        for t in entry["train"]:
            assert by_id[t["train_id"]]["meta"]["split"] == "train"
            if "image_exact" in t["why"]:
                assert by_id[t["train_id"]]["image"] == by_id[entry["test_id"]]["image"]
            if "qa_pair" in t["why"]:
                assert leakage._turn_pairs(by_id[t["train_id"]]) == leakage._turn_pairs(by_id[entry["test_id"]])
    row, = report["by_dataset"]
    assert (row["train_dataset"], row["test_dataset"], row["test_records"]) == ("vqa_rad", "vqa_rad", 451)
    assert row["image_exact"] == s["image_exact"] and row["overlapping"] == s["test_records_overlapping"]
    assert took < 20, took


def test_near_duplicate_found_unrelated_not(shared_data, tmp_path):
    folder = shared_data / "vqa_rad" / "VQA_RAD Image Folder"
    original, unrelated = folder / "synpic100132.jpg", folder / "synpic23571.jpg"
    assert original.is_file() and unrelated.is_file()
    with Image.open(original) as im:
        im = im.convert("RGB")
        im.resize((int(im.width * 0.9), int(im.height * 0.9)), Image.Resampling.BICUBIC).save(
            tmp_path / "copy.jpg", quality=70)
    shutil.copy(original, tmp_path / "same_bytes.jpg")
    train = [rec("t0", str(original), "What organ is shown?", "brain")]
    test = [rec("near", str(tmp_path / "copy.jpg"), "Is this a CT?", "no", split="test"),
            rec("bytes", str(tmp_path / "same_bytes.jpg"), "What organ is shown?", "lung", split="test"),
            rec("other", str(unrelated), "Is this a CT?", "no", split="test")]
    report = leakage.audit(train, test, show_progress=False)
    listed = {r["test_id"]: r for r in report["records"]}
    assert set(listed) == {"near", "bytes"}
    near, = listed["near"]["train"]
    assert near["why"] == ["image_near"] and 0 <= near["distance"] <= leakage.DEFAULT_THRESHOLD
    # the same bytes under another name: exact, and the same question with another answer: image_question
    assert listed["bytes"]["train"][0]["why"] == ["image_exact", "image_question"]
    assert "distance" not in listed["bytes"]["train"][0]
    # the unrelated image is far away; threshold -1 turns near-duplicates off
    d = leakage.hamming(leakage.phash_file(original), leakage.phash_file(unrelated))
    assert d > leakage.DEFAULT_THRESHOLD + 4, d
    off = leakage.audit(train, test, threshold=-1, show_progress=False)
    assert {r["test_id"] for r in off["records"]} == {"bytes"}


def test_qa_pairs_after_normalisation(tmp_path):
    a, b, c = (write_image(tmp_path / f"{n}.png", seed=s) for n, s in (("a", 1), ("b", 2), ("c", 3)))
    train = [rec("t1", a, "Is there a fracture?", "Yes."), rec("t2", a, "What is abnormal?", "pneumonia"),
             rec("t3", a, "Is there a fracture?", "yes", dataset="slake")]
    test = [rec("q1", b, "is there   a FRACTURE", "yes", split="test"),
            rec("q2", c, "Is there a fracture?", "no", split="test"),  # other answer: not a QA pair
            rec("q3", c, "What is abnormal ?", "Pneumonia!", split="test", dataset="pathvqa")]
    report = leakage.audit(train, test, show_progress=False)
    listed = {r["test_id"]: r for r in report["records"]}
    assert set(listed) == {"q1", "q3"}
    assert {t["train_id"] for t in listed["q1"]["train"]} == {"t1", "t3"}
    assert all(t["why"] == ["qa_pair"] for t in listed["q1"]["train"])
    assert report["summary"]["qa_pair"] == 2 and report["summary"]["image_exact"] == 0
    rows = {(r["train_dataset"], r["test_dataset"]): r for r in report["by_dataset"]}
    assert set(rows) == {("vqa_rad", "vqa_rad"), ("slake", "vqa_rad"), ("vqa_rad", "pathvqa")}
    assert rows[("vqa_rad", "vqa_rad")]["test_records"] == 2 and rows[("vqa_rad", "pathvqa")]["qa_pair"] == 1


def test_nothing_overlapping_counts_zero(tmp_path):
    train = [rec(f"t{i}", write_image(tmp_path / f"t{i}.png", seed=i), f"What is shown {i}?", f"thing {i}")
             for i in range(3)]
    test = [rec(f"s{i}", write_image(tmp_path / f"s{i}.png", seed=10 + i), f"Where is it {i}?", "left", split="test")
            for i in range(3)]
    report = leakage.audit(train, test, show_progress=False)
    assert report["records"] == [] and report["by_dataset"] == [] and report["unreadable_images"] == []
    assert report["summary"] == {"test_records": 3, "test_records_overlapping": 0, "image_exact": 0, "image_near": 0,
                                 "qa_pair": 0, "image_question": 0, "test_images": 3, "test_images_in_train": 0,
                                 "test_images_exact_in_train": 0}
    assert leakage.file_warnings(report) == []


def test_hash_cache_and_unreadable(tmp_path):
    p = tmp_path / "x.png"
    write_image(p, seed=1)
    cache = leakage.HashCache()
    first = cache.get(str(p))
    write_image(p, seed=2)
    os.utime(p, ns=(1, 1))  # another mtime: hashed again
    assert cache.get(str(p)) != first
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    report = leakage.audit([rec("t", str(p))], [rec("s", str(tmp_path / "bad.jpg"), split="test"),
                                                 rec("m", str(tmp_path / "missing.jpg"), split="test")],
                           show_progress=False)
    assert sorted(Path(u["path"]).name for u in report["unreadable_images"]) == ["bad.jpg", "missing.jpg"]
    assert report["summary"]["qa_pair"] == 2  # text still compared


def test_cli_from_another_cwd(tmp_path):
    img = write_image(tmp_path / "i.png", seed=4)
    write_json(tmp_path / "train.json", [rec("t", img), rec("held", img, "Is it big?", "no", split="test")])
    write_json(tmp_path / "test.jsonl.json", [rec("s", img, "What is it?", "cyst", split="test")])
    cwd = tmp_path / "run"
    cwd.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "data_process.leakage", "--train", str(tmp_path / "train.json"),
           "--test", str(tmp_path / "test.jsonl.json")]
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "leakage: 1 of 1 test records overlap 1 training records (image_exact 1" in res.stdout
    report = json.loads((cwd / "leakage_report.json").read_text())
    assert report["train_records"] == 1  # the test-split record of the train file is not training data
    assert report["records"][0]["train"][0]["train_id"] == "t"
    res = subprocess.run(cmd[:-1] + [str(tmp_path / "nope.json")], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2 and res.stderr.strip().startswith("error: ") and "nope.json" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_data_trans_train_data_warns(tmp_path, capsys):
    a, b = write_image(tmp_path / "a.png", seed=1), write_image(tmp_path / "b.png", seed=2)
    write_json(tmp_path / "all.json", [rec("tr", a), rec("te", a, "Is it big?", "no", split="test"),
                                       rec("te2", b, "What is it?", "cyst", split="test")])
    write_json(tmp_path / "other.json", [rec("o", b, "Where?", "left", dataset="slake")])
    write_json(tmp_path / "clean.json", [rec("c", write_image(tmp_path / "c.png", seed=3), "Why?", "because")])
    assert data_trans.main(["--inputs", str(tmp_path / "all.json"), "--output_dir", str(tmp_path / "plain")]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err
    assert "leakage" not in json.loads((tmp_path / "plain" / "categories.json").read_text())
    assert data_trans.main(["--inputs", str(tmp_path / "all.json"), "--output_dir", str(tmp_path / "ev"),
                            "--train_data", str(tmp_path / "all.json"), str(tmp_path / "other.json"),
                            str(tmp_path / "clean.json")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2  # one per overlapping training file; clean.json overlaps nothing
    assert any(str(tmp_path / "all.json") in w and "1 of 2 test records" in w and "image_exact 1" in w
               for w in warnings)
    assert any(str(tmp_path / "other.json") in w and "1 of 2 test records" in w for w in warnings)
    info = json.loads((tmp_path / "ev" / "categories.json").read_text())["leakage"]
    assert info["summary"]["test_records_overlapping"] == 2 and len(info["by_file"]) == 2
