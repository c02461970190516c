"""bench/compile_llm.py (issue 21 lever): compiled decoder layers give the eager loss and LoRA gradients, on the
packed + chunked-loss path the product trains with (CPU, fp32, tiny Qwen2-VL)."""
import pytest
import torch
from torch._dynamo.utils import counters

from bench.compile_llm import compile_decoder_layers, decoder_layers
from medvl.packing import PackedCollator
from tests.test_packing import _loss_and_grads, _samples, _stage_model, _trainer


def test_compiled_decoder_layers_equal_eager_loss_and_grads(tiny_models, tmp_path):
    pytest.importorskip("torch._inductor")
    model, proc, fam = _stage_model(tiny_models["qwen2_vl"], tmp_path)
    for n, p in model.named_parameters():  # LoRA B starts at 0: give it values so every gradient path is live
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)
    batch = PackedCollator(proc.pad_token_id, proc.image_token_id)(_samples(proc, tmp_path))
    trainer = _trainer(model, proc, fam, tmp_path, packing=True, chunked_loss=True, loss_chunk=7)
    ref_loss, ref_g = _loss_and_grads(trainer, model, batch)
    names_before = [n for n, _ in model.named_parameters()]

    n_layers = compile_decoder_layers(model)
    assert n_layers == len(decoder_layers(model)) > 0
    assert [n for n, _ in model.named_parameters()] == names_before  # adapters save under the same keys
    torch._dynamo.reset()
    counters.clear()
    loss, g = _loss_and_grads(trainer, model, batch)
    assert counters["stats"]["unique_graphs"] >= 1  # the layers ran compiled, not silently eager
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert g.keys() == ref_g.keys()
    for n in g:
        torch.testing.assert_close(g[n], ref_g[n], rtol=1e-4, atol=1e-6, msg=n)


def test_decoder_layers_names_the_missing_part():
    with pytest.raises(ValueError, match="language_model.layers"):
        decoder_layers(torch.nn.Linear(2, 2))
