"""The one encoding path: labels, image tokens, truncation, odd image modes, bad input."""
import numpy as np
import pytest
from PIL import Image

from data_process.validate import validate_records
from tests.conftest import qa_record, write_image
from medvl.loading import load_processor
from medvl.images import load_image
from medvl.samples import IGNORE_INDEX, SampleError


@pytest.fixture(scope="module")
def proc(tiny_models):
    return load_processor(str(tiny_models["qwen2_vl"]), max_len=256)


def test_labels_cover_only_assistant_turns(proc, tmp_path):
    img = write_image(tmp_path / "a.png")
    rec = {"id": "m", "image": img, "conversations": [
        {"from": "human", "value": "<image>\nIs there a lesion?"}, {"from": "gpt", "value": "yes"},
        {"from": "human", "value": "Where?"}, {"from": "gpt", "value": "left"}], "meta": {}}
    enc = proc.encode(rec)
    tok = proc.tokenizer
    assert tok.decode([t for t in enc.labels if t != IGNORE_INDEX]) == "yes<|im_end|>left<|im_end|>"
    assert all(l == IGNORE_INDEX for t, l in zip(enc.input_ids, enc.labels) if t == proc.image_token_id)
    prompt = proc.encode(rec, train=False)
    assert tok.decode(prompt.input_ids).endswith("<|im_start|>assistant\n")
    assert "left" not in tok.decode(prompt.input_ids)  # the final answer is not in the prompt


def test_custom_system_prompt_is_a_real_system_turn(tiny_models, tmp_path):
    p = load_processor(str(tiny_models["qwen2_vl"]), system_prompt="You are a radiologist.")
    text = p.tokenizer.decode(p.encode(qa_record("s", write_image(tmp_path / "a.png")), train=False).input_ids)
    assert text.startswith("<|im_start|>system\nYou are a radiologist.<|im_end|>")
    assert "helpful assistant" not in text


def test_multi_image_and_text_only(proc, tmp_path):
    a, b = write_image(tmp_path / "a.png"), write_image(tmp_path / "b.png", size=(200, 60))
    enc = proc.encode(qa_record("mi", [a, b], "Compare the two."))
    assert enc.image_grid_thw.shape[0] == 2
    n = sum(int(g.prod()) // 4 for g in enc.image_grid_thw)
    assert sum(t == proc.image_token_id for t in enc.input_ids) == n
    txt = proc.encode(qa_record("t", None, "What is CT?", "computed tomography"))
    assert txt.pixel_values is None and proc.image_token_id not in txt.input_ids


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16"])
def test_odd_image_modes_are_handled(mode, tmp_path):
    path = tmp_path / f"x.{'tif' if mode == 'CMYK' else 'png'}"
    if mode == "I;16":
        Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(path)
    else:
        write_image(path, mode=mode)
    im = load_image(path)
    assert im.mode == "RGB"
    if mode == "I;16":
        arr = np.asarray(im)
        assert arr.min() == 0 and arr.max() == 255  # rescaled by range, not clipped to white


@pytest.mark.parametrize("content,reason", [(None, "missing_image"), (b"", "unreadable_image"),
                                            (b"not an image", "unreadable_image")])
def test_bad_images_name_the_sample(proc, tmp_path, content, reason):
    p = tmp_path / "bad.jpg"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(SampleError) as e:
        proc.encode(qa_record("bad-1", str(p)))
    assert e.value.reason == reason and "bad-1" in str(e.value)


def test_truncated_jpeg_is_rejected(proc, tmp_path):
    good = tmp_path / "g.jpg"
    write_image(good, size=(300, 300))
    data = good.read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(SampleError, match="unreadable_image"):
        proc.encode(qa_record("trunc", str(tmp_path / "t.jpg")))


def test_over_length_rejected_or_cut_after_images(tiny_models, tmp_path):
    img = write_image(tmp_path / "a.png")
    long_q = "Describe the finding. " * 80
    rec = qa_record("long", img, long_q, "a lesion " * 30)
    strict = load_processor(str(tiny_models["qwen2_vl"]), max_len=128)
    with pytest.raises(SampleError, match="over_length"):
        strict.encode(rec)
    # text_tail never cuts image tokens: here the question sits after the image, so cutting keeps all image tokens,
    # but the answer is cut away entirely -> no answer tokens -> rejected, not silently trained on nothing.
    tail = load_processor(str(tiny_models["qwen2_vl"]), max_len=128, truncation="text_tail")
    with pytest.raises(SampleError, match="no_answer_tokens"):
        tail.encode(rec)
    ok = tail.encode(qa_record("long2", img, "Describe.", "lesion " * 200))
    assert len(ok) == 128 and sum(t == tail.image_token_id for t in ok.input_ids) == 16


def test_validate_counts_every_record(proc, tmp_path):
    img = write_image(tmp_path / "a.png")
    recs = [qa_record("ok1", img), qa_record("ok1", img), qa_record("noimg", str(tmp_path / "missing.png")),
            {"id": "empty", "image": img, "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": " "}]},
            qa_record("tags", img, "<image>\n<image>\ntwo tags one image"), "not a dict",
            qa_record("long", img, "word " * 400)]
    kept, rep = validate_records(recs, proc, progress=False)
    assert [r["id"] for r in kept] == ["ok1"]
    d = rep.as_dict()
    assert d["input"] == 7 and d["kept"] == 1 and d["rejected"] == 6
    by = {k: v["ids"] for k, v in d["rejected_by_reason"].items()}
    assert by["duplicate_id"] == ["ok1"] and by["missing_image"] == ["noimg"] and by["over_length"] == ["long"]
    assert set(by["malformed_record"]) == {"empty", "tags", "<record #5>"}
    assert "1 '<image>' tags" not in rep.details["tags"] and "2 '<image>' tags for 1 images" in rep.details["tags"]
