"""Grounding SFT data from meta.boxes: the records, the accounting, and the per-family box text at encode time."""
import pytest

from data_process.grounding_sft import build, main
from medvl.jsonio import read_json
from medvl.schema import REGION_TAG, record_problems
from data_process.validate import validate_records
from tests.conftest import qa_record, write_image
from medvl.loading import load_processor
from medvl.families import parse_boxes
from medvl.samples import IGNORE_INDEX, SampleError

SIZE = (200, 160)


def _records(tmp_path):
    img = write_image(tmp_path / "a.png", size=SIZE)
    other = write_image(tmp_path / "b.png", size=SIZE, seed=1)
    boxes = [{"label": "Liver", "xyxy": [20, 30, 90, 100], "image_size": list(SIZE)},
             {"label": "Kidney", "xyxy": [120, 80, 150, 120], "image_size": list(SIZE)},
             {"label": " kidney", "xyxy": [40, 110, 70, 150], "image_size": list(SIZE)},
             {"label": "Bad", "xyxy": [50, 50, 40, 60], "image_size": list(SIZE)},         # x2 < x1
             {"label": "Out", "xyxy": [150, 100, 260, 150], "image_size": list(SIZE)}]     # past the right edge
    a = qa_record("q1", img, split="train", modality="CT", boxes=boxes[:3])
    b = qa_record("q2", img, "Is this a CT?", split="train", boxes=boxes)  # same image: boxes merged, deduplicated
    return [a, b, qa_record("q3", other, split="train"), qa_record("q4", None, "text only")]


def test_records_and_report(tmp_path):
    out, rep = build(_records(tmp_path), seed=0)
    assert rep["read"] == 4 and rep["converted"] == 2 and rep["skipped"] == {"no_boxes": 1, "no_image": 1}
    assert rep["boxes"]["read"] == 5 and rep["boxes"]["kept"] == 3
    assert rep["boxes"]["rejected"] == {"non_positive_size": ["q1:Bad"], "outside_image": ["q1:Out"]}
    assert rep["records_out"] == {"grounding": 2, "region_classification": 3}
    assert all(record_problems(r) == [] for r in out)
    ground = {r["conversations"][1]["value"]: r for r in out if r["meta"]["task"] == "grounding"}
    assert set(ground) == {"liver", "kidney"}
    assert [b["xyxy"] for b in ground["kidney"]["meta"]["boxes"]] == [[120, 80, 150, 120], [40, 110, 70, 150]]
    assert "kidney" in ground["kidney"]["conversations"][0]["value"]
    assert ground["liver"]["meta"]["modality"] == "CT" and ground["liver"]["meta"]["source_ids"] == ["q1", "q2"]
    regions = [r for r in out if r["meta"]["task"] == "region_classification"]
    assert [r["conversations"][1]["value"] for r in regions] == ["liver", "kidney", "kidney"]
    for r in regions:  # the question holds the region, never its label
        q = r["conversations"][0]["value"]
        assert q.count(REGION_TAG) == 1 and r["conversations"][1]["value"] not in q
    again, _ = build(_records(tmp_path), seed=0)
    assert again == out  # deterministic
    with pytest.raises(Exception, match="--tasks"):
        build(_records(tmp_path), tasks=["detection"])


def test_image_with_conflicting_splits_is_rejected(tmp_path):
    recs = _records(tmp_path)
    recs[1]["meta"]["split"] = "test"
    out, rep = build(recs)
    assert out == [] and list(rep["boxes"]["rejected"]) == ["image_in_several_splits"]


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_same_records_render_in_each_family_format_and_parse_back(family, tiny_models, tmp_path):
    out, _ = build(_records(tmp_path))
    proc = load_processor(str(tiny_models[family]), max_len=512)
    tok = proc.tokenizer
    for rec in out:
        enc = proc.encode(rec)
        orig, inp = enc.image_sizes[0], enc.input_sizes[0]
        assert tuple(orig) == SIZE
        fam = proc.family
        if rec["meta"]["task"] == "grounding":
            text = tok.decode([t for t in enc.labels if t != IGNORE_INDEX])
            want = [b["xyxy"] for b in rec["meta"]["boxes"]]
        else:
            prompt = tok.decode(proc.encode(rec, train=False).input_ids)
            assert REGION_TAG not in prompt
            text = prompt[prompt.rindex("<|im_start|>user"):]
            want = [rec["meta"]["boxes"][0]["xyxy"]]
            assert rec["conversations"][1]["value"] not in text  # the label stays out of the question
        if family == "qwen2_vl":
            assert "<|box_start|>(" in text and "bbox_2d" not in text
        else:
            assert '{"bbox_2d": [' in text and "<|box_start|>" not in text
        got = [b for _, b in parse_boxes(fam, text, orig, inp)]
        assert len(got) == len(want), text
        # rounding: 1/1000 of the side (relative grid) or one input pixel scaled back (absolute)
        tol = max(orig) / 1000 + 1e-6 if fam.box_format == "qwen2" else max(o / i for o, i in zip(orig, inp)) * 0.5 + 1e-6
        for g, w in zip(got, want):
            assert all(abs(a - b) <= tol for a, b in zip(g, w)), (family, text, g, w)


def test_region_tags_without_matching_boxes_are_rejected(tiny_models, tmp_path):
    proc = load_processor(str(tiny_models["qwen2_vl"]), max_len=512)
    rec = qa_record("r", write_image(tmp_path / "a.png"), f"What is in {REGION_TAG} and {REGION_TAG}?", "liver",
                    boxes=[{"label": "liver", "xyxy": [1, 1, 20, 20], "image_size": [100, 120]}])
    assert "2 '<region>' tags for 1 boxes" in "; ".join(record_problems(rec))
    with pytest.raises(SampleError, match="region_tag_mismatch"):
        proc.encode(rec)
    kept, rep = validate_records([rec], proc, progress=False)
    assert kept == [] and rep.as_dict()["rejected_by_reason"]["malformed_record"]["ids"] == ["r"]


def test_slake_sample_boxes_to_grounding_sft(shared_data, tiny_models, tmp_path):
    from data_process import slake

    sample = shared_data / "slake_sample"
    records, _ = slake.convert(sample / "train.json", sample / "imgs", show_progress=False)
    write = tmp_path / "slake.json"
    from medvl.jsonio import write_json
    write_json(write, records)
    assert main(["--input", str(write), "--out", str(tmp_path / "g.json")]) == 0
    out, rep = read_json(tmp_path / "g.json"), read_json(tmp_path / "g.report.json")
    assert rep["images"] == 15 and rep["boxes"]["kept"] == 17 and rep["records_out"]["region_classification"] == 17
    assert {r["id"] for r in out} >= {"slake-img1-ground-0", "slake-img1-region-0"}
    liver = next(r for r in out if r["id"] == "slake-img1-ground-0")
    assert liver["conversations"][1]["value"] == "liver" and liver["meta"]["boxes"][0]["xyxy"] == [54, 106, 84, 137]
    kept, vrep = validate_records(out, load_processor(str(tiny_models["qwen2_vl"]), max_len=1024), progress=False)
    assert len(kept) == len(out), vrep.summary()
