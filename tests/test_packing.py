"""The speed path is exact: packed rows, varlen attention, chunked loss and the vision cache give the padded path's
losses and gradients (fp32, tiny models)."""
import pytest
import torch
import torch.nn.functional as F

from transformers import TrainingArguments

import medvl.varlen_attention as va
from data_process.synth import generate
from medvl.collate import VLCollator, make_keepalive
from medvl.families import FAMILIES as FAMILIES_REG
from medvl.loading import load_model_and_processor
from medvl.packing import PackedCollator, packed_position_ids
from medvl.varlen_attention import register, varlen
from tests.conftest import FAMILIES, qa_record, write_image
from train.builder import make_trainer, prepare_model
from train.chunked_loss import chunked_nll_sum
from train.config import SpeedArguments, StageArguments
from train.finetune import parse_args, run
from train.vision_cache import VisionFeatureCache

QA = [((64, 80), "Is there a lesion?", "yes"),
      ((120, 90), "What organ is shown in this scan?", "the liver, with a longer answer than the others"),
      ((56, 56), "Where?", "left"),
      ((90, 60), "Which side is the effusion on, and how large is it?", "right side, small")]


def _samples(proc, tmp_path, text_only_last=False):
    recs = []
    for i, (size, q, a) in enumerate(QA):
        img = None if (text_only_last and i == len(QA) - 1) else write_image(tmp_path / f"i{i}.png", size, seed=i)
        recs.append(qa_record(f"r{i}", img, q, a))
    enc = [proc.encode(r, train=True) for r in recs]
    for e, r in zip(enc, recs):
        e.key = r["id"]
    return enc


def _args(tmp_path, **kw):
    return TrainingArguments(output_dir=str(tmp_path / "t"), use_cpu=True, report_to=[], label_names=["labels"],
                             remove_unused_columns=False, **kw)


def _stage_model(path, tmp_path):
    """A tiny model with the Stage-2 LoRA, as train/builder.py prepares it (dropout off: deterministic losses)."""
    model, proc, fam = load_model_and_processor(str(path), dtype="float32", attn_implementation=register())
    model, _ = prepare_model(model, fam, StageArguments(stage=2, lora_dropout=0.0).apply_preset(), _args(tmp_path))
    return model, proc, fam


def _trainer(model, proc, family, tmp_path, vision_cache=None, **speed):
    """The product's trainer (train/builder.py) around a prepared model, for its compute_loss."""
    return make_trainer(model, proc, family, _args(tmp_path), StageArguments(stage=2).apply_preset(),
                        fargs=SpeedArguments(**speed), vision_cache=vision_cache).trainer


def _loss_and_grads(trainer, model, batch):
    model.zero_grad()
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_and_chunked_equal_padded_loss_and_grads(family, tiny_models, tmp_path):
    model, proc, fam = _stage_model(tiny_models[family], tmp_path)
    for n, p in model.named_parameters():  # LoRA B starts at 0: give it values so every gradient path is live
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)
    enc = _samples(proc, tmp_path, text_only_last=True)
    padded = VLCollator(proc.pad_token_id, proc.image_token_id)(enc)
    packed = PackedCollator(proc.pad_token_id, proc.image_token_id)(enc)
    assert packed["input_ids"].shape == (1, sum(len(e) for e in enc))

    ref_loss, ref_g = _loss_and_grads(_trainer(model, proc, fam, tmp_path), model, padded)  # HF's own loss
    for chunked in (False, True):
        for batch in ((packed, padded) if chunked else (packed,)):
            loss, g = _loss_and_grads(_trainer(model, proc, fam, tmp_path, chunked_loss=chunked, loss_chunk=7), model,
                                      batch)
            torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
            assert g.keys() == ref_g.keys()
            for n in g:
                torch.testing.assert_close(g[n], ref_g[n], rtol=1e-4, atol=1e-6, msg=n)


def test_packed_position_ids_restart_per_sample(tiny_models, tmp_path):
    model, proc, fam = load_model_and_processor(str(tiny_models["qwen2_vl"]), dtype="float32")
    enc = _samples(proc, tmp_path)
    packed = PackedCollator(proc.pad_token_id, proc.image_token_id)(enc)
    pos = packed_position_ids(model.model, packed)
    assert pos.shape == (4, 1, packed["input_ids"].shape[1])
    cu = packed["cu_seq_lens_q"].tolist()
    for s, e in zip(cu[:-1], cu[1:]):
        assert pos[:, 0, s].tolist() == [0, 0, 0, 0]
        assert pos[0, 0, s:e].tolist() == list(range(e - s))
    # the first token of each sample predicts nothing from its neighbour
    assert all(packed["labels"][0, s] == -100 for s in cu[:-1])


@pytest.mark.parametrize("hq,hkv,causal", [(4, 4, True), (6, 2, True), (4, 4, False)])
def test_varlen_equals_masked_sdpa(hq, hkv, causal):
    torch.manual_seed(0)
    lens = [5, 17, 1, 9]
    t, d = sum(lens), 16
    q, k, v = torch.randn(t, hq, d), torch.randn(t, hkv, d), torch.randn(t, hkv, d)
    cu = torch.tensor([0] + lens).cumsum(0).to(torch.int32)
    out = varlen(q, k, v, cu, max(lens), d ** -0.5, causal=causal)
    seg = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens))
    mask = (seg[:, None] == seg[None, :]) & (torch.ones(t, t, dtype=torch.bool).tril() if causal else True)
    ref = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                                         attn_mask=mask, enable_gqa=hq != hkv)[0].transpose(0, 1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_chunked_nll_equals_cross_entropy_value_and_grads():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    h = torch.randn(23, 8, requires_grad=True)
    y = torch.randint(0, 50, (23,))
    got = chunked_nll_sum(h, y, head, chunk=5)
    gh, gw = torch.autograd.grad(got, (h, head.weight))
    ref = F.cross_entropy(head(h), y, reduction="sum")
    rh, rw = torch.autograd.grad(ref, (h, head.weight))
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(gh, rh)
    torch.testing.assert_close(gw, rw)
    assert chunked_nll_sum(h[:0], y[:0], head).item() == 0.0


def test_vision_cache_hits_give_the_same_loss(tiny_models, tmp_path):
    model, proc, fam = _stage_model(tiny_models["qwen2_5_vl"], tmp_path)
    enc = _samples(proc, tmp_path, text_only_last=True)
    batch = PackedCollator(proc.pad_token_id, proc.image_token_id, emit_image_keys=True)(enc)
    assert batch["image_keys"] == ["r0#0", "r1#0", "r2#0"]
    plain = {k: v for k, v in batch.items() if k != "image_keys"}
    cache = VisionFeatureCache(fam)
    cache.check_frozen(model)
    ref = _trainer(model, proc, fam, tmp_path).compute_loss(model, plain)
    tr = _trainer(model, proc, fam, tmp_path, vision_cache=cache, chunked_loss=True)
    miss, hit = tr.compute_loss(model, batch), tr.compute_loss(model, batch)
    torch.testing.assert_close(miss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hit, ref, rtol=1e-5, atol=1e-6)
    assert cache.stats == {"hits": 3, "misses": 3, "not_stored_full": 0}
    with pytest.raises(ValueError, match="does not support"):
        VisionFeatureCache(FAMILIES_REG["qwen3_vl"])


def test_finetune_with_every_speed_option(tiny_models, tmp_path):
    """End to end through the entry point: 2 epochs, the vision cache serves epoch 2, options land in the summary."""

    data = generate(tmp_path / "synth", n_train=8, n_val=2, n_test=2, size=64, seed=3)
    out = tmp_path / "run"
    summary = run(*parse_args([
        "--model_name_or_path", str(tiny_models["qwen2_vl"]), "--train_data", str(data["train"]), "--stage", "2",
        "--output_dir", str(out), "--per_device_train_batch_size", "4", "--num_train_epochs", "2", "--use_cpu",
        "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1", "--dataloader_num_workers", "0",
        "--packing", "--chunked_loss", "--vision_cache", "--bf16"]))  # bf16: Accelerate upcasts outputs
    assert summary["args"]["speed"] == {"packing": True, "chunked_loss": True, "loss_chunk": 4096,
                                        "vision_cache": True, "vision_cache_gib": 16.0,
                                        "lora_keep_input_dtype": False, "liger_kernels": False,
                                        "memory_budget_gib": ""}
    vc = summary["vision_cache"]
    n_images = vc["images"]
    assert n_images > 0 and vc["misses"] == n_images and vc["hits"] == n_images  # epoch 1 computes, epoch 2 reuses
    assert summary["train_metrics"]["train_loss"] > 0
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("packed", [False, True])
def test_keepalive_runs_the_vision_tower_without_changing_the_loss(packed, tiny_models, tmp_path):

    model, proc, fam = load_model_and_processor(str(tiny_models["qwen2_vl"]), dtype="float32",
                                                attn_implementation=register())
    text_only = [proc.encode(qa_record(f"t{i}", None, q, a), train=True) for i, (_, q, a) in enumerate(QA)]
    ka = make_keepalive(proc)
    cls = PackedCollator if packed else VLCollator
    plain = cls(proc.pad_token_id, proc.image_token_id)(text_only)
    kept = cls(proc.pad_token_id, proc.image_token_id, keepalive=ka)(text_only)
    assert "pixel_values" not in plain and kept["image_grid_thw"].shape[0] == 1
    with_image = _samples(proc, tmp_path)
    assert torch.equal(cls(proc.pad_token_id, proc.image_token_id, keepalive=ka)(with_image)["input_ids"],
                       cls(proc.pad_token_id, proc.image_token_id)(with_image)["input_ids"])
    tr = _trainer(model, proc, fam, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(tr.compute_loss(model, dict(kept)), tr.compute_loss(model, dict(plain)))


@pytest.mark.parametrize("family", FAMILIES)
def test_varlen_vision_equals_stock_vision(family, tiny_models, tmp_path, monkeypatch):
    """All images of a batch through one varlen call per layer == transformers' own per-image attention loop."""

    model, proc, _ = load_model_and_processor(tiny_models[family], dtype="float32")
    enc = _samples(proc, tmp_path)
    pix, grid = torch.cat([e.pixel_values for e in enc]), torch.cat([e.image_grid_thw for e in enc])

    def features():
        with torch.no_grad():
            out = model.model.get_image_features(pixel_values=pix, image_grid_thw=grid)
        out = getattr(out, "pooler_output", out)
        return torch.cat(list(out))

    stock = features()
    calls = []
    real = va.varlen
    monkeypatch.setattr(va, "varlen", lambda *a, **k: calls.append(len(a[3]) - 1) or real(*a, **k))
    assert va.use_varlen_vision(model, cpu_ok=True)
    torch.testing.assert_close(features(), stock, rtol=1e-5, atol=1e-5)
    assert calls and max(calls) >= len(enc), "the vision tower did not take the one-call varlen path"


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_keep_input_dtype_trains_the_same_adapter(family, tiny_models, tmp_path):
    """--lora_keep_input_dtype (no fp32 copy of each LoRA module's input): two bf16 training steps through the
    Trainer (Accelerate's autocast) end with bit-identical LoRA weights and losses (no LoRA dropout: its 1/(1-p)
    factor rounds differently in bf16, the masks are the same)."""
    from safetensors.torch import load_file

    data = generate(tmp_path / "synth", n_train=8, n_val=2, n_test=2, size=64, seed=3)

    def train(out, *extra):
        return run(*parse_args([
            "--model_name_or_path", str(tiny_models[family]), "--train_data", str(data["train"]), "--stage", "2",
            "--output_dir", str(out), "--per_device_train_batch_size", "4", "--max_steps", "2", "--use_cpu",
            "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1", "--dataloader_num_workers", "0",
            "--packing", "--chunked_loss", "--bf16", "--lora_dropout", "0", "--seed", "0", *extra]))
    plain, kept = train(tmp_path / "plain"), train(tmp_path / "kept", "--lora_keep_input_dtype")
    assert kept["args"]["speed"]["lora_keep_input_dtype"] is True
    assert kept["train_metrics"]["train_loss"] == plain["train_metrics"]["train_loss"]
    a, b = load_file(tmp_path / "plain" / "adapter_model.safetensors"), load_file(tmp_path / "kept" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(float(t.abs().max()) > 0 for k, t in a.items() if "lora_B" in k)  # the steps did move the weights
    with pytest.raises(ValueError, match="--lora_keep_input_dtype needs --bf16"):
        from train.builder import check_config
        check_config(*parse_args(["--model_name_or_path", "m", "--train_data", "t", "--output_dir", str(tmp_path),
                                  "--lora_keep_input_dtype", "--use_cpu"]))


def test_keep_lora_input_dtype_turns_peft_input_cast_off():
    """The switch really removes PEFT's fp32 copy: outside autocast a bf16 input now meets the fp32 LoRA weight
    (an error), where with the cast PEFT ran the branch in fp32."""
    from peft import LoraConfig, get_peft_model

    from train.adapters import keep_lora_input_dtype

    net = torch.nn.Sequential(torch.nn.Linear(8, 8)).to(torch.bfloat16)
    model = get_peft_model(net, LoraConfig(r=2, target_modules=["0"]))
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    assert model(x).dtype == torch.bfloat16  # PEFT casts x to the fp32 LoRA weight, then the result back
    assert keep_lora_input_dtype(model) == 1
    with pytest.raises(RuntimeError, match="dtype"):
        model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the Trainer runs it with --bf16
        assert model(x).dtype == torch.bfloat16
