"""#17.10 / #17.11: edge inputs of conversion and data_trans end in a named rejection or a one-line error naming the
file, never in a silently wrong record or a traceback: a UTF-8 BOM, NaN boxes, `<image>` in released text, qid
null/true, ids 7 and "7", deeply nested JSON, a full disk, and a VQA-Med 2019 folder holding a file without answers."""
from __future__ import annotations

import codecs
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_process import convert, data_trans, slake, validate, vqa_med2019, vqa_rad
from medvl.jsonio import DataError, iter_jsonl, iter_records, read_records, write_json
from medvl.schema import make_record
from tests.conftest import write_image

ROOT = Path(__file__).resolve().parents[2]
BOM = codecs.BOM_UTF8


def _rad_row(qid, question="Is there a fracture?", answer="yes", image="synpic1.jpg"):
    return {"qid": qid, "image_name": image, "question": question, "answer": answer, "answer_type": "CLOSED",
            "question_type": "PRES", "phrase_type": "test_freeform", "qid_linked_id": "x", "image_organ": "HEAD"}


@pytest.fixture
def rad(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "synpic1.jpg", size=(16, 16))
    return tmp_path, images


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


# ------------------------------------------------------------------------------------------------ UTF-8 BOM
def test_a_byte_order_mark_is_read_in_every_format(tmp_path, rad):
    recs = [make_record(f"r-{i}", None, "Is it?", "yes", {"dataset": "t", "split": "test"}) for i in range(3)]
    js, jl = tmp_path / "bom.json", tmp_path / "bom.jsonl"
    js.write_bytes(BOM + json.dumps(recs).encode())
    jl.write_bytes(BOM + "".join(json.dumps(r) + "\n" for r in recs).encode())
    for path in (js, jl):
        assert [r["id"] for r in read_records(path)] == ["r-0", "r-1", "r-2"]
        assert [r["id"] for r in iter_records(path, bad_lines="yield")] == ["r-0", "r-1", "r-2"]  # the first kept
    _, images = rad
    osf = tmp_path / "VQA_RAD Dataset Public.json"
    osf.write_bytes(BOM + json.dumps([_rad_row(1)]).encode())
    assert vqa_rad.convert(osf, images, show_progress=False)[1]["converted"] == 1


# ------------------------------------------------------------------------------------------------ SLAKE NaN box
def test_a_nan_box_in_detection_json_is_rejected_by_name(tmp_path):
    folder = tmp_path / "imgs" / "xmlab1"
    folder.mkdir(parents=True)
    write_image(folder / "source.jpg", size=(40, 30))
    (folder / "detection.json").write_text('[{"Liver": [NaN, 2, 5, 5]}, {"Spleen": [1, 1, Infinity, 4]}, '
                                           '{"Kidney": [1, 1, 4, 4]}]')
    row = {"qid": 1, "img_name": "xmlab1/source.jpg", "question": "Where is the liver?", "answer": "left",
           "q_lang": "en", "answer_type": "OPEN", "content_type": "Position"}
    write_json(tmp_path / "test.json", [row])
    records, report = slake.convert(tmp_path / "test.json", tmp_path / "imgs", show_progress=False)
    boxes = report["boxes"]
    assert boxes["rejected"] == {"box_not_finite": ["xmlab1:Liver", "xmlab1:Spleen"]}
    assert boxes["clipped"] == 0 and boxes["kept"] == 1
    assert [b["label"] for b in records[0]["meta"]["boxes"]] == ["Kidney"]


# ------------------------------------------------------------------------------------------------ VQA-RAD rows
def test_vqa_rad_rejects_tags_in_text_and_qids_that_are_not_ids(rad):
    tmp, images = rad
    rows = [_rad_row(1, "<image> What is <image> here?"), _rad_row(2, answer="<image>"),
            _rad_row(3, "Is <region> enlarged?"), _rad_row(None), _rad_row(True), _rad_row(4.5), _rad_row(7)]
    write_json(tmp / "VQA_RAD Dataset Public.json", rows)
    records, report = vqa_rad.convert(tmp / "VQA_RAD Dataset Public.json", images, show_progress=False)
    assert [r["id"] for r in records] == ["vqarad-7"]
    name = "VQA_RAD Dataset Public.json"
    assert report["rejected"] == {"reserved_tag_in_text": ["vqarad-1", "vqarad-2", "vqarad-3"],
                                  "missing_qid": [f"{name}#3"], "invalid_qid": [f"{name}#4", f"{name}#5"]}
    assert report["details"][f"{name}#4"] == f"{name}#4: qid=True"
    assert "<image>" in report["details"]["vqarad-1"]


# ------------------------------------------------------------------------------------------------ 7 and "7"
def test_ids_7_and_string_7_are_one_id(tmp_path, capsys):
    a = make_record(7, None, "Is it?", "yes", {"dataset": "t", "split": "test"})
    b = make_record("7", None, "Is it not?", "no", {"dataset": "t", "split": "test"})
    write_json(tmp_path / "in.json", [a, b])
    assert data_trans.main(["--inputs", str(tmp_path / "in.json"), "--out_dir", str(tmp_path / "eval")]) == 2
    _one_line_error(capsys, "record id '7' also in", "the same id")
    kept, rep = validate.validate_records([a, b], None, progress=False)
    assert [r["id"] for r in kept] == [7] and dict(rep.rejected) == {"duplicate_id": ["7"]}


# ------------------------------------------------------------------------------------------------ deep JSON
def test_deeply_nested_json_is_a_named_error(tmp_path, rad, capsys):
    _, images = rad
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    argv = ["vqa_rad", "--input", str(deep), "--image_root", str(images), "--out", str(tmp_path / "o.json")]
    assert convert.main(argv) == 2
    _one_line_error(capsys, "deep.json", "nested too deeply")
    element = tmp_path / "deep_list.json"  # streamed reader: one element too deep
    element.write_text("[" + "[" * 200_000 + "]" * 200_000 + "]")
    with pytest.raises(DataError, match="deep_list.json: list element 0 is JSON nested too deeply"):
        list(iter_records(element))
    jl = tmp_path / "deep.jsonl"
    jl.write_text('{"id": "ok"}\n' + "[" * 200_000 + "]" * 200_000 + "\n")
    rows = list(iter_jsonl(jl, bad_lines="yield"))
    assert rows[0] == {"id": "ok"} and (rows[1].lineno, rows[1].reason) == (2, "nested_too_deeply")


# ------------------------------------------------------------------------------------------------ full disk
def test_a_failed_write_is_one_line_naming_the_file(tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DataError, match=r"out.json: writing failed \(No space left on device\)"):
        write_json(tmp_path / "out.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


def test_a_full_disk_while_storing_an_image_stops_the_run_instead_of_rejecting_rows(tmp_path, monkeypatch):
    import base64
    import io as _io

    from PIL import Image

    from data_process import pathvqa

    buf = _io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    row = {"image": {"bytes": base64.b64encode(buf.getvalue()).decode(), "path": None}, "question": "Is it?",
           "answer": "no"}
    (tmp_path / "test.jsonl").write_text(json.dumps(row) + "\n")

    def no_space(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", no_space)
    with pytest.raises(DataError, match=r"images: cannot store an image \(No space left on device\)"):
        pathvqa.convert(tmp_path / "test.jsonl", tmp_path / "images", show_progress=False)


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_ends_the_converter_and_data_trans_with_one_line(tiny_disk, tmp_path, rad):
    _, images = rad
    rows = [_rad_row(i, f"Is there a fracture number {i}? " + "x" * 200) for i in range(200)]
    write_json(tmp_path / "VQA_RAD Dataset Public.json", rows)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for argv in (["data_process.convert", "vqa_rad", "--input", str(tmp_path / "VQA_RAD Dataset Public.json"),
                  "--image_root", str(images), "--out", str(tiny_disk / "rad.json")],):
        p = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, env=env, cwd=ROOT,
                           timeout=120)
        err = p.stderr.strip()
        assert p.returncode == 2 and err.startswith("error: ") and "\n" not in err, err
        assert "rad.json" in err and "No space left on device" in err
    assert list(tiny_disk.iterdir()) == []
    records, _ = vqa_rad.convert(tmp_path / "VQA_RAD Dataset Public.json", images, show_progress=False)
    write_json(tmp_path / "rad.json", records)
    p = subprocess.run([sys.executable, "-m", "data_process.data_trans", "--inputs", str(tmp_path / "rad.json"),
                        "--out_dir", str(tiny_disk / "eval")], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=120)
    err = p.stderr.strip()
    assert p.returncode == 2 and err.startswith("error: ") and "\n" not in err and "No space left" in err, err


# ------------------------------------------------------------------------------------------------ VQA-Med 2019
def test_vqa_med_folder_skips_and_names_files_it_cannot_use(tmp_path, capsys):
    images = tmp_path / "Train_images"
    images.mkdir()
    write_image(images / "synpic1.jpg", size=(16, 16))
    train = tmp_path / "Training"
    train.mkdir()
    (train / "C1_Modality_train.txt").write_text("synpic1|what modality is shown?|ct\n")
    (train / "VQAMed2019_Test_Questions.txt").write_text("synpic9|what is abnormal?\n")
    (train / "readme.txt").write_text("ImageCLEF 2019 VQA-Med training set\n")
    records, report = vqa_med2019.convert(train, images, show_progress=False)
    assert [r["id"] for r in records] == ["vqamed2019-train-synpic1-modality"]
    assert report["skipped_files"] == {
        str(train / "VQAMed2019_Test_Questions.txt"): "questions without reference answers (img_id|question)",
        str(train / "readme.txt"): "not a QA-pairs file (line 1 has 1 columns)"}
    assert report["inputs"] == [str(train / "C1_Modality_train.txt")]
    out = tmp_path / "o.json"
    assert vqa_med2019.main(["--input", str(train), "--image_root", str(images), "--out", str(out)]) == 0
    assert "skipped file" in capsys.readouterr().out
    with pytest.raises(DataError, match="VQAMed2019_Test_Questions.txt: .*pass VQAMed2019_Test_Questions_w_Ref_Answers"):
        vqa_med2019.convert(train / "VQAMed2019_Test_Questions.txt", images)
    (train / "C1_Modality_train.txt").unlink()
    with pytest.raises(DataError, match="Training: no QA-pairs file here"):
        vqa_med2019.convert(train, images)
