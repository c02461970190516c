"""Evaluation generation and perplexity on tiny models: batched == one-by-one, resume after a kill, fp32 corpus PPL."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medvl.jsonio import write_json
from eval.generate import completed_ids, generate_for_model
from eval.model_spec import ModelSpec
from eval.perplexity import perplexity_for_model
from tests.conftest import FAMILIES, qa_record, write_image

ROOT = Path(__file__).resolve().parents[1]


def _mixed_records(tmp_path, n=7):
    sizes = [(64, 64), (120, 80), (90, 150), (200, 60), (56, 112), (100, 100), (77, 131)]
    qs = ["Is there a lesion?", "What is the imaging modality of this scan, and is it a CT or an MRI?", "Where?",
          "Describe the finding in detail, please, including position and size.", "Left or right?", "Organ?",
          "Is this a normal study without any abnormality at all?"]
    return [qa_record(f"r{i}", write_image(tmp_path / f"i{i}.png", size=sizes[i % 7], seed=i), qs[i % 7],
                      "yes" if i % 2 else "no", answer_type="closed") for i in range(n)]


def _preds(path):
    return {json.loads(l)["id"]: json.loads(l)["prediction"] for l in open(path)}


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_greedy_equals_one_at_a_time(family, tiny_models, tmp_path):
    recs = _mixed_records(tmp_path)
    spec = ModelSpec.parse(f"tiny={tiny_models[family]}")
    batched = generate_for_model(spec, recs, tmp_path / "b", batch_size=4, max_new_tokens=8, dtype="float32", progress=False)
    single = generate_for_model(spec, recs, tmp_path / "s", batch_size=1, max_new_tokens=8, dtype="float32", progress=False)
    a, b = _preds(batched), _preds(single)
    assert len(a) == len(recs) and a == b
    assert any(v for v in a.values()), "the model generated nothing at all"


def test_kill_halfway_then_rerun_gives_each_id_once(tiny_models, tmp_path):
    recs = _mixed_records(tmp_path, n=7)
    write_json(tmp_path / "test.json", recs)
    cmd = [sys.executable, "-m", "eval.generate", "--model", f"m={tiny_models['qwen2_vl']}", "--test_data",
           str(tmp_path / "test.json"), "--out_dir", str(tmp_path / "out"), "--batch_size", "2", "--max_new_tokens", "4",
           "--dtype", "float32", "--device", "cpu"]
    # a first run that is "killed" after 3 records: we run with --limit 3, then cut the last line in half
    subprocess.run(cmd + ["--limit", "3"], cwd=ROOT, check=True, capture_output=True)
    pred = tmp_path / "out" / "m" / "predictions.jsonl"
    data = pred.read_bytes()
    pred.write_bytes(data[: len(data) - 10])  # a kill mid-write leaves a partial last line
    assert len(completed_ids(pred)) == 2
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    ids = [json.loads(l)["id"] for l in open(pred)]
    assert sorted(ids) == sorted(r["id"] for r in recs) and len(ids) == len(set(ids))
    info = json.loads((tmp_path / "out" / "m" / "run_info.json").read_text())
    assert info["decoding"]["do_sample"] is False and info["already_done"] == 2
    assert info["waited_for_encoding_s"] >= 0 and info["vision"]["compiled"] is False


def test_corpus_perplexity_is_fp32_token_weighted_over_answer_tokens_only(tiny_models, tmp_path):
    """#16.8: PPL = exp(mean NLL over exactly the reference answer's tokens), recomputed here from the prompt's ids
    followed by the answer text's ids: the end-of-turn <|im_end|> is not an answer token."""
    from medvl.collate import VLCollator
    from medvl.samples import Encoded
    from eval.model_spec import load_spec

    recs = _mixed_records(tmp_path, n=5) + [qa_record("text_only", None, "Is pneumonia contagious?", "no")]
    recs[1]["conversations"][-1]["value"] = "a much longer reference answer with many tokens in it"
    spec = ModelSpec.parse(f"m={tiny_models['qwen2_vl']}")
    tm = {r["id"]: {"answer_type": "closed", "closed_type": "yes_no"} for r in recs}
    res = perplexity_for_model(spec, recs, tmp_path / "out", tm, batch_size=3, dtype="float32", progress=False)
    model, proc, _ = load_spec(spec, dtype="float32")
    nll, tok = 0.0, 0
    for r in recs:
        prompt = proc.encode(r, train=False)
        answer = proc.tokenizer(r["conversations"][-1]["value"], add_special_tokens=False)["input_ids"]
        enc = Encoded(prompt.input_ids + answer, None, prompt.pixel_values, prompt.image_grid_thw)
        batch = VLCollator(proc.pad_token_id, proc.image_token_id)([enc])
        with torch.no_grad():
            logp = torch.log_softmax(model(**batch).logits[0].double(), -1)
        start = len(prompt.input_ids)
        nll -= sum(logp[start + i - 1, t].item() for i, t in enumerate(answer))
        tok += len(answer)
    assert res["overall"]["tokens"] == tok
    assert math.isclose(res["overall"]["ppl"], math.exp(nll / tok), rel_tol=1e-4)
    assert "<|im_end|>" in res["tokens_counted"]
    mean_of_ppl = sum(math.exp(v["nll_sum"] / v["tokens"]) for v in res["per_sample"].values()) / len(recs)
    assert not math.isclose(res["overall"]["ppl"], mean_of_ppl, rel_tol=1e-3)  # not the outlier-driven mean
    assert res["by_category"]["closed/yes_no"]["tokens"] == tok
    assert (tmp_path / "out" / "m" / "perplexity.json").exists()


def test_model_spec_parsing(tmp_path):
    with pytest.raises(ValueError, match="name=CHECKPOINT"):
        ModelSpec.parse("just/a/path")
    with pytest.raises(ValueError, match="not an adapter dir"):
        ModelSpec.parse(f"x=base+{tmp_path}")
    assert ModelSpec.parse("base=Qwen/Qwen2-VL-2B-Instruct") == ModelSpec("base", "Qwen/Qwen2-VL-2B-Instruct", ())


def test_encoder_pool_matches_inline_encoding_and_names_failures(tiny_models, tmp_path):
    """Worker processes (reused over two passes) give the same batches as encoding in line, longest first; an
    unreadable image is a named failure in its batch, nothing is dropped."""
    from eval.model_spec import load_spec_processor
    from eval.prompt_batches import EncoderPool

    recs = _mixed_records(tmp_path, n=7) + [qa_record("text_only", None, "Is pneumonia contagious?", "yes")]
    recs[3]["image"] = str(tmp_path / "missing.png")
    proc, _ = load_spec_processor(ModelSpec.parse(f"m={tiny_models['qwen2_vl']}"))

    def run(pool):
        out = list(pool.batches(recs, 3, pixel_dtype=torch.bfloat16))
        return out, [r["id"] for b in out for r in b.records]

    with EncoderPool(proc, 0) as inline, EncoderPool(proc, 2) as workers:
        ref, ref_ids = run(inline)
        for _ in range(2):
            got, ids = run(workers)
            assert ids == ref_ids
            for a, b in zip(got, ref):
                assert a.inputs.keys() == b.inputs.keys() and a.failed == b.failed
                for k in a.inputs:
                    assert torch.equal(a.inputs[k], b.inputs[k]), k
    failed = {k: v for b in ref for k, v in b.failed.items()}
    assert list(failed) == ["r3"] and "missing_image" in failed["r3"]
    assert sorted(ref_ids + list(failed)) == sorted(r["id"] for r in recs)
    assert ref[0].inputs["pixel_values"].dtype == torch.bfloat16
    lens = [int(b.inputs["attention_mask"].sum(1).max()) for b in ref]
    assert lens == sorted(lens, reverse=True), "batches are not longest-first"


@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_vision_blocks_equal_eager(family, tiny_models, tmp_path):
    """--compile_vision: torch.compile of the vision blocks gives the eager features (fp32), shapes vary."""
    from eval.fast_vision import prepare_vision
    from eval.model_spec import load_spec

    model, proc, _ = load_spec(ModelSpec.parse(f"m={tiny_models[family]}"), dtype="float32")
    encs = [proc.encode(r, train=False) for r in _mixed_records(tmp_path, n=3)]

    def feats(es):
        with torch.no_grad():
            out = model.model.get_image_features(pixel_values=torch.cat([e.pixel_values for e in es]),
                                                 image_grid_thw=torch.cat([e.image_grid_thw for e in es]))
        return torch.cat(list(getattr(out, "pooler_output", out)))

    eager = [feats(encs), feats(encs[:1])]
    assert prepare_vision(model, compile=True)["compiled"]
    torch.testing.assert_close(feats(encs), eager[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats(encs[:1]), eager[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("workers", [0, 1])
def test_encoder_bug_stops_and_names_the_record(tiny_models, tmp_path, workers):
    """An unexpected exception while encoding (a bug, not bad data) is not turned into a silent skip."""
    from eval.model_spec import load_spec_processor
    from eval.prompt_batches import EncoderPool

    recs = _mixed_records(tmp_path, n=3)
    proc, _ = load_spec_processor(ModelSpec.parse(f"m={tiny_models['qwen2_vl']}"))
    real = proc.encode
    proc.encode = lambda r, train=True: (_ for _ in ()).throw(KeyError("boom")) if r["id"] == "r1" else real(r, train)
    with EncoderPool(proc, workers) as pool, pytest.raises(RuntimeError, match="encoding record 'r1' failed"):
        list(pool.batches(recs, 2))


def test_models_at_different_pixel_budgets_are_flagged_and_one_budget_applies_to_all(tiny_models, tmp_path):
    """#16.7: a checkpoint whose saved budget differs from another's is named in a warning; --min/--max_pixels
    (run_eval's MIN_PIXELS / MAX_PIXELS) give every model the same budget."""
    import shutil

    from eval.generate import budget_warning

    other = shutil.copytree(tiny_models["qwen2_vl"], tmp_path / "other")
    cfg = json.loads((other / "preprocessor_config.json").read_text())
    cfg["max_pixels"] = 56 * 56 * 2
    cfg.setdefault("size", {})["longest_edge"] = 56 * 56 * 2
    (other / "preprocessor_config.json").write_text(json.dumps(cfg))
    specs = [ModelSpec.parse(f"base={tiny_models['qwen2_vl']}"), ModelSpec.parse(f"other={other}")]
    warning = budget_warning(specs)
    assert warning and "different pixel budgets" in warning and "other 3136-6272" in warning, warning
    assert budget_warning(specs, max_pixels=112 * 112) is None


def test_in_training_generation_shows_its_progress_and_keeps_the_answers(tiny_models, tmp_path, capsys):
    """Training validation sat at "3/3" while it generated: greedy_generate counts records when given a label, and
    the bar changes no answer."""
    from medvl.generation import greedy_generate
    from medvl.loading import load_model_and_processor

    model, processor, _ = load_model_and_processor(str(tiny_models["qwen2_vl"]), dtype="float32")
    recs = _mixed_records(tmp_path, n=5)
    capsys.readouterr()
    quiet = greedy_generate(model.eval(), processor, recs, 2, 4)
    assert "validation: generating" not in capsys.readouterr().err
    shown = greedy_generate(model, processor, recs, 2, 4, progress="validation: generating")
    err = capsys.readouterr().err
    assert "validation: generating" in err and "/5 [" in err, err  # counts the 5 records
    assert shown == quiet
