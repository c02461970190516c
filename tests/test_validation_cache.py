"""A validation verdict is reused only while the records, their images and the preprocessing are unchanged."""
import json
import os
import time

import pytest

from data_process.validate import main as validate_main
from data_process.validate import summary_of, validate_cached
from medvl.jsonio import read_records, write_json
from medvl.loading import load_processor
from tests.conftest import qa_record, write_image


@pytest.fixture
def setup(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVL_CACHE_DIR", str(tmp_path / "cache"))
    recs = [qa_record(f"r{i}", write_image(tmp_path / f"i{i}.png", seed=i)) for i in range(4)]
    recs.append(qa_record("bad", str(tmp_path / "missing.png")))  # rejected: the image does not exist
    return recs, load_processor(str(tiny_models["qwen2_vl"]), max_len=2048), tmp_path


def test_same_inputs_reuse_the_verdict_and_its_rejections(setup):
    recs, proc, _ = setup
    kept, rep, reused = validate_cached(recs, proc, progress=False)
    assert reused is None and [r["id"] for r in kept] == ["r0", "r1", "r2", "r3"] and rep["rejected"] == 1
    again = [json.loads(json.dumps(r)) for r in recs]  # records as read back from a file
    kept2, rep2, reused2 = validate_cached(again, proc, progress=False)
    assert reused2 and os.path.isfile(reused2) and kept2 == kept and rep2 == rep
    assert summary_of(rep2).startswith("5 records: 4 kept, 1 rejected")


def test_a_changed_record_image_or_preprocessing_validates_again(setup, tiny_models):
    recs, proc, tmp = setup
    validate_cached(recs, proc, progress=False)
    edited = [dict(r) for r in recs]
    edited[0] = qa_record("r0", edited[0]["image"], question="Is there a mass?")
    assert validate_cached(edited, proc, progress=False)[2] is None  # the record text changed
    time.sleep(0.01)
    write_image(tmp / "i1.png", size=(64, 64), seed=9)  # an image replaced under the same name
    assert validate_cached(recs, proc, progress=False)[2] is None
    assert validate_cached(recs, proc, progress=False)[2] is not None  # ...and that verdict is reused in turn
    other = load_processor(str(tiny_models["qwen2_vl"]), max_len=1024)  # another preprocessing setting
    assert validate_cached(recs, other, progress=False)[2] is None


def test_off_switch(setup, monkeypatch):
    recs, proc, _ = setup
    monkeypatch.setenv("MEDVL_NO_VALIDATION_CACHE", "1")
    validate_cached(recs, proc, progress=False)
    assert validate_cached(recs, proc, progress=False)[2] is None


def test_training_reuses_what_data_process_validate_checked(setup, tiny_models, capsys):
    """The README's order: validate the file, then train on the clean output; training's own pass is skipped."""
    recs, proc, tmp = setup
    write_json(tmp / "train.json", recs)
    validate_main(["--model_name_or_path", str(tiny_models["qwen2_vl"]), "--data", str(tmp / "train.json"),
                   "--out", str(tmp / "train.clean.json"), "--no_progress"])
    clean = read_records(tmp / "train.clean.json")
    kept, rep, reused = validate_cached(clean, proc, progress=False)
    assert reused and len(kept) == 4 and rep["validated_by"].startswith("python -m data_process.validate")


def test_training_validates_each_file_once_and_names_an_id_repeated_across_files(setup):
    from train.builder import load_splits
    from train.config import DataArguments

    recs, proc, tmp = setup
    write_json(tmp / "a.json", recs[:3])
    write_json(tmp / "b.json", [recs[2], recs[3]])  # r2 again
    dargs = DataArguments(train_data=f"{tmp / 'a.json'},{tmp / 'b.json'}")
    splits, reports = load_splits(dargs, proc, progress=False)
    assert [r["id"] for r in splits["train"]] == ["r0", "r1", "r2", "r3"]
    rep = reports["train"]
    assert rep["input"] == 5 and rep["kept"] == 4 and rep["rejected_by_reason"]["duplicate_id_across_files"]["ids"] == ["r2"]
    assert not rep["reused_from"]
    _, again = load_splits(dargs, proc, progress=False)  # a later stage / rerun: both files' verdicts reused
    assert len(again["train"]["reused_from"]) == 2 and again["train"]["kept"] == 4
