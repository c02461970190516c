"""#17.1: a prompt longer than the model's context (less max_new_tokens), or than --max_len, is a named per-record
failure in run_info / perplexity.json; every other record is generated and scored."""
import json
import shutil

from eval.generate import generate_for_model
from eval.model_spec import ModelSpec
from eval.perplexity import perplexity_for_model
from tests.conftest import qa_record, write_image

FAST = dict(dtype="float32", progress=False, num_workers=0)
CONTEXT = 400


def _small_context_model(tiny_models, tmp_path):
    """The tiny checkpoint with a 400-token context (max_position_embeddings in its text config)."""
    ckpt = shutil.copytree(tiny_models["qwen2_vl"], tmp_path / "ctx400")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["text_config"]["max_position_embeddings"] = CONTEXT
    (ckpt / "config.json").write_text(json.dumps(cfg))
    return ckpt


def _records(tmp_path):
    recs = [qa_record(f"r{i}", write_image(tmp_path / f"i{i}.png", seed=i), "Is there a lesion?", "yes")
            for i in range(3)]
    # ~600 tokens of question: over the context, and the longest record, so batched first
    recs.insert(1, qa_record("huge", write_image(tmp_path / "h.png"), "Is there a lesion? " * 150, "no"))
    return recs


def test_over_long_prompt_is_a_named_failure_and_generation_goes_on(tiny_models, tmp_path):
    spec = ModelSpec.parse(f"m={_small_context_model(tiny_models, tmp_path)}")
    pred = generate_for_model(spec, _records(tmp_path), tmp_path / "out", batch_size=4, max_new_tokens=8, **FAST)
    ids = sorted(json.loads(line)["id"] for line in open(pred))
    info = json.loads((pred.parent / "run_info.json").read_text())
    assert ids == ["r0", "r1", "r2"]
    assert list(info["failed"]) == ["huge"] and "over_length" in info["failed"]["huge"], info["failed"]
    assert info["max_len"] == CONTEXT - 8 and "max_position_embeddings 400" in info["max_len_from"]


def test_explicit_max_len_and_perplexity(tiny_models, tmp_path):
    spec = ModelSpec.parse(f"m={tiny_models['qwen2_vl']}")  # context 4096: only --max_len stops the long record
    recs = _records(tmp_path)
    pred = generate_for_model(spec, recs, tmp_path / "out", max_new_tokens=4, max_len=300, **FAST)
    info = json.loads((pred.parent / "run_info.json").read_text())
    assert list(info["failed"]) == ["huge"] and info["max_len_from"] == "--max_len"
    small = ModelSpec.parse(f"p={_small_context_model(tiny_models, tmp_path)}")
    res = perplexity_for_model(small, recs, tmp_path / "out", **FAST)
    assert list(res["failed"]) == ["huge"] and "over_length" in res["failed"]["huge"]
    assert res["overall"]["n"] == 3 and res["max_len"] == CONTEXT
