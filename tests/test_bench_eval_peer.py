"""bench/eval_throughput.py compares like with like: in fp32, the peer (c) (HF batched generate, left padding, batch
of several records) and the project's batched path (b) decode the same greedy tokens as the per-sample loop (a), so
their speed ratio is a ratio of equal work. bf16 on the GPU may flip near-ties; that rate is printed there."""
import pytest
import torch

from bench.eval_throughput import batched, hf_batched, left_padded_hf_processor, per_sample
from medvl.loading import load_model_and_processor
from tests.conftest import qa_record, write_image

SIZES = [(64, 64), (120, 80), (90, 150), (200, 60), (56, 112), (100, 100)]
QUESTIONS = ["Is there a lesion?", "What is the imaging modality of this scan, and is it a CT or an MRI?", "Where?",
             "Describe the finding in detail, please, including position and size.", "Left or right?", "Organ?"]


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_hf_batched_and_ours_equal_one_by_one_greedy_fp32(family, tiny_models, tmp_path):
    torch.manual_seed(0)
    model, processor, fam = load_model_and_processor(str(tiny_models[family]), dtype="float32")
    model.eval()
    recs = [qa_record(f"r{i}", write_image(tmp_path / f"i{i}.png", size=SIZES[i], seed=i), QUESTIONS[i], "yes")
            for i in range(len(SIZES))]
    one = per_sample(model, processor, fam, recs, 6)
    hf = hf_batched(model, processor, fam, recs, 6, batch_size=4, hf_proc=left_padded_hf_processor(processor))
    ours = batched(model, processor, fam, recs, 6, batch_size=4)
    assert all(len(t) == 6 for t in one)       # min_new_tokens: every path decodes the same count
    assert hf == one
    assert ours == one
