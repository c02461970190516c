"""Evaluation speed: the per-sample `generate` loop vs the project's eval path (eval/generate.py), same data, one process.

Both paths decode exactly N new tokens (EOS suppressed with min_new_tokens), greedy. (a) = one `generate` call per
record, preprocessing in line (the common recipe). (b) = `eval.generate.generate_stream`: length-sorted left-padded
batches, encoded by worker processes ahead of the GPU; as in eval.generate, the workers start once before the
model loads (their start is printed, not part of a timed pass). Reported: samples/s, new tokens/s, peak memory, the ratio
b/a, and how often (b)'s tokens equal (a)'s (bf16 batched vs one-by-one numerics can flip near-ties; fp32 equality
is a CI test). (a) is a per-record loop, so its rate is measured on the first --n_a records (median of --repeats_a
passes); (b) runs all --n records (a test set, not one batch), median of --repeats passes.

(c) (--hf_batch_size, default 64) is the real peer a user writes instead of the loop: the transformers processor with
left padding, one `model.generate` per 64 records in file order, sdpa, preprocessing in line; all --n records, median
of --repeats passes; its ratio to (b) is printed per row (ratio_b_hf).

--breakdown adds where (b)'s time goes: the encoding pipeline alone (no GPU), the GPU alone on pre-encoded batches,
the vision tower alone, and prefill alone (1 new token).

    python -m bench.eval_throughput --config bench/configs/qwen2_vl_2b.json --n 192 --n_a 48 --new_tokens 8 \\
        --batch_size 48 96 --num_workers 12 --breakdown
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

WORDS = ("is there a lesion in the left upper lobe of the lung what imaging modality was used to acquire this image "
         "does the liver look normal which organ is abnormal where is the mass located is this a ct scan of the chest").split()


def make_records(n: int, tmp: Path, seed: int = 0) -> list[dict]:
    """VQA-like prompts: images 448-560 px a side, questions of 8-40 words."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    recs = []
    for i in range(n):
        w, h = rng.randint(448, 561, size=2)
        path = tmp / f"img{i}.png"
        Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")).save(path)
        q = " ".join(rng.choice(WORDS, size=rng.randint(8, 41))) + "?"
        recs.append({"id": f"b{i}", "image": str(path), "conversations": [
            {"from": "human", "value": "<image>\n" + q}, {"from": "gpt", "value": "yes"}], "meta": {}})
    return recs


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def per_sample(model, processor, family, records, new_tokens, **_):
    """(a) the common loop: one record, one generate call."""
    from medvl.generation import greedy_generate
    out = []
    for r in records:
        out += greedy_generate(model, processor, [r], 1, new_tokens, return_ids=True, min_new_tokens=new_tokens)
    return out


def batched(model, processor, family, records, new_tokens, batch_size=48, pool=None, waits=None):
    """(b) the eval path: eval.generate.generate_stream, as `python -m eval.generate` runs it."""
    from eval.generate import generate_stream
    by_id, wait, enc = {}, 0.0, 0.0
    for batch, ids in generate_stream(model, processor, family, records, batch_size, new_tokens, pool=pool,
                                      return_ids=True, min_new_tokens=new_tokens):
        assert not batch.failed, batch.failed
        by_id.update({r["id"]: t for r, t in zip(batch.records, ids)})
        wait, enc = wait + batch.wait_s, enc + batch.encode_s
    if waits is not None:
        waits.append((wait, enc / len(records)))
    return [by_id[r["id"]] for r in records]


def hf_batched(model, processor, family, records, new_tokens, batch_size=64, hf_proc=None, **_):
    """(c) what a user writes instead of the loop: the transformers processor with left padding, `batch_size`
    records per `model.generate` call, in file order, preprocessing in line, sdpa (the model as loaded)."""
    from PIL import Image

    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(records), batch_size):
        chunk = records[i:i + batch_size]
        images = [Image.open(r["image"]).convert("RGB") for r in chunk]
        texts = [hf_proc.apply_chat_template([{"role": "user", "content": [
            {"type": "image"}, {"type": "text", "text": r["conversations"][0]["value"].replace("<image>\n", "")}]}],
            tokenize=False, add_generation_prompt=True) for r in chunk]
        inputs = hf_proc(text=texts, images=images, padding=True, return_tensors="pt").to(dev)
        with torch.no_grad():
            gen = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        out += [row.tolist() for row in gen[:, inputs["input_ids"].shape[1]:]]
    return out


def left_padded_hf_processor(processor):
    """The processor a user loads for batched generation: its own tokenizer copy, padding on the left."""
    import copy

    from bench.peers import hf_processor
    tok = copy.deepcopy(processor.tokenizer)
    tok.padding_side = "left"
    return hf_processor(tok, processor.image_processor)


def _agreement(ids_a, ids_x) -> tuple[float, float]:
    n = len(ids_a)
    seq = sum(x == y for x, y in zip(ids_a, ids_x)) / n
    tok = sum(sum(u == v for u, v in zip(x, y)) for x, y in zip(ids_a, ids_x)) / sum(len(x) for x in ids_a)
    return seq, tok


def set_vision(model, variant: str) -> str:
    """(b)'s vision tower: "sdpa" (stock, one call per image per layer), "varlen" (one varlen call per layer),
    "varlen+compile" (also torch.compile of the blocks, eval.generate --compile_vision) or "varlen+liger" (liger's
    kernels in the whole model, medvl/liger.py; bench only). Returns a label."""
    from eval.fast_vision import prepare_vision
    from medvl.families import vision_tower
    visual = vision_tower(model)
    if variant == "sdpa":
        visual.config._attn_implementation = "sdpa"
        return "sdpa"
    got = prepare_vision(model, compile=variant == "varlen+compile")
    if variant == "varlen+liger":  # a lever on trial for eval: liger's norms / SwiGLU in the ViT and the LLM
        from medvl.liger import apply_liger
        apply_liger(model)
        return got["attention"] + "+liger"
    return got["attention"] + ("+compile" if got["compiled"] else "")


def timed(fn, *args, repeats=1, **kw):
    """Median wall time over `repeats` passes (each synchronised), peak memory, last result."""
    times, result = [], None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        _sync()
        t0 = time.perf_counter()
        result = fn(*args, **kw)
        _sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else float("nan")
    return statistics.median(times), peak, result


def breakdown(model, processor, family, records, new_tokens, batch_size, pool) -> dict:
    """Seconds for each part of (b), run on their own."""
    from eval.generate import vision_dtype
    from eval.prompt_batches import prompt_batches
    from medvl.generation import generate_batch

    dt = vision_dtype(model)
    t_enc, _, batches = timed(lambda: list(prompt_batches(processor, records, batch_size, pool=pool, pixel_dtype=dt)))
    dev = next(model.parameters()).device

    def vit():
        for b in batches:
            model.model.get_image_features(b.inputs["pixel_values"].to(dev), b.inputs["image_grid_thw"].to(dev))

    def gen(k):
        for b in batches:
            generate_batch(model, processor, b.inputs, k, return_ids=True, min_new_tokens=k)

    with torch.no_grad():
        t_vit = timed(vit, repeats=3)[0]
    t_pre = timed(gen, 1, repeats=3)[0]
    t_gen = timed(gen, new_tokens, repeats=3)[0]
    return {"encode_only_s": t_enc, "vision_only_s": t_vit, "prefill_only_s": t_pre, "gpu_only_s": t_gen,
            "decode_steps_s": t_gen - t_pre, "n": len(records), "batch_size": batch_size}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", default=None, help="an existing checkpoint dir instead of building one")
    p.add_argument("--n", type=int, default=192, help="records for (b)")
    p.add_argument("--n_a", type=int, default=48, help="records for (a) (the first of the --n); <= --n")
    p.add_argument("--new_tokens", type=int, nargs="+", default=[8, 64])
    p.add_argument("--batch_size", type=int, nargs="+", default=[48])
    p.add_argument("--num_workers", type=int, default=8, help="encoding processes of path (b)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of the batched path (median)")
    p.add_argument("--repeats_a", type=int, default=3, help="timed repeats of the per-sample loop (median)")
    p.add_argument("--vision", nargs="+", choices=["sdpa", "varlen", "varlen+compile", "varlen+liger"],
                   default=["varlen"], help="(b)'s vision tower variants, run in this order (compile and liger cannot "
                                            "be undone: put one of them last)")
    p.add_argument("--hf_batch_size", type=int, default=64,
                   help="batch of (c), HF batched generate with left padding; 0 skips (c)")
    p.add_argument("--breakdown", action="store_true", help="also time (b)'s parts on their own (first batch size)")
    p.add_argument("--out", default="bench/results/eval_throughput.json")
    a = p.parse_args(argv)

    from bench.random_checkpoint import build
    from eval.prompt_batches import EncoderPool
    from medvl.loading import load_model_and_processor, load_processor

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tmp = Path(tempfile.mkdtemp())
    ckpt = a.checkpoint or str(build(a.config, str(tmp / "ckpt"), device=device))
    # as eval.generate does: (b)'s encoding workers start once, before the weights load (not in the timed passes)
    proc_for_pool = load_processor(ckpt)
    t0 = time.perf_counter()
    pool = EncoderPool(proc_for_pool, a.num_workers)
    pool_start = time.perf_counter() - t0
    model, processor, family = load_model_and_processor(ckpt, dtype="bfloat16", attn_implementation="sdpa")
    model = model.to(device).eval()
    records = make_records(a.n, tmp)
    hf_proc = left_padded_hf_processor(processor) if a.hf_batch_size else None
    n_a = min(a.n_a, a.n)
    common = {"config": Path(a.config).stem, "n": a.n, "n_a": n_a, "repeats_a": a.repeats_a, "repeats_b": a.repeats,
              "num_workers": a.num_workers, "pool_start_s": pool_start,
              "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}
    rows = []
    for k in a.new_tokens:
        set_vision(model, "sdpa")
        per_sample(model, processor, family, records[:2], k)  # warm-up both paths
        batched(model, processor, family, records[:4], k, 4, pool)
        ta, ma, ids_a = timed(per_sample, model, processor, family, records[:n_a], k, repeats=a.repeats_a)
        hf = {}
        if a.hf_batch_size:  # (c) on all --n records, stock sdpa vision, as the model loaded
            hf_batched(model, processor, family, records[:4], k, 4, hf_proc=hf_proc)  # warm-up
            tc, mc, ids_c = timed(hf_batched, model, processor, family, records, k, batch_size=a.hf_batch_size,
                                  hf_proc=hf_proc, repeats=a.repeats)
            seq_c, tok_c = _agreement(ids_a, ids_c[:n_a])
            hf = {"hf_batch_size": a.hf_batch_size, "hf_samples_per_s": a.n / tc, "hf_tokens_per_s": a.n * k / tc,
                  "hf_peak_gib": mc, "hf_seconds": tc, "hf_sequence_agreement": seq_c, "hf_token_agreement": tok_c}
        for vit in a.vision:
            vit_impl = set_vision(model, vit)
            for w in (2, 4, 8):  # warm-up: this path's kernels (and, compiled, its dynamic-shape graphs)
                batched(model, processor, family, records[:w], k, w, pool)
            for j, bs in enumerate(a.batch_size):
                waits = []
                tb, mb, ids_b = timed(batched, model, processor, family, records, k, batch_size=bs, pool=pool,
                                      waits=waits, repeats=a.repeats)
                ids_b = ids_b[:n_a]
                row = {**common, "new_tokens": k, "batch_size": bs, "vision_attention": vit_impl,
                       "a_samples_per_s": n_a / ta, "b_samples_per_s": a.n / tb, "a_tokens_per_s": n_a * k / ta,
                       "b_tokens_per_s": a.n * k / tb, "ratio": (a.n / tb) / (n_a / ta), "a_peak_gib": ma,
                       "b_peak_gib": mb, "b_wait_for_encoding_s": statistics.median(w for w, _ in waits),
                       "worker_encode_ms_per_sample": 1000 * statistics.median(e for _, e in waits), "b_seconds": tb,
                       "sequence_agreement": sum(x == y for x, y in zip(ids_a, ids_b)) / n_a,
                       "token_agreement": sum(sum(u == v for u, v in zip(x, y)) for x, y in zip(ids_a, ids_b))
                       / sum(len(x) for x in ids_a), **hf}
                if hf:
                    row["ratio_b_hf"] = row["b_samples_per_s"] / hf["hf_samples_per_s"]
                if a.breakdown and j == 0:
                    row["breakdown"] = breakdown(model, processor, family, records, k, bs, pool)
                rows.append(row)
                print(json.dumps(row), flush=True)
    pool.close()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    prev = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps(prev + rows, indent=2))
    print("\n| model | new tok | vision attn | batch | (a) samples/s | (b) samples/s | ratio b/a | (b) s, of which "
          "waiting for encoding | peak GiB a / b | seq agree | tok agree |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['new_tokens']} | {r['vision_attention']} | {r['batch_size']} | "
              f"{r['a_samples_per_s']:.2f} | {r['b_samples_per_s']:.1f} | {r['ratio']:.1f}x | "
              f"{r['b_seconds']:.2f} / {r['b_wait_for_encoding_s']:.2f} | {r['a_peak_gib']:.1f} / {r['b_peak_gib']:.1f} | "
              f"{r['sequence_agreement']:.2f} | {r['token_agreement']:.3f} |")
    for r in rows:
        if "hf_samples_per_s" in r:
            print(f"{r['config']} {r['new_tokens']} tok: (c) HF batched generate, batch {r['hf_batch_size']}, left "
                  f"padding, sdpa: {r['hf_samples_per_s']:.2f} samples/s, peak {r['hf_peak_gib']:.1f} GiB, "
                  f"seq/tok agreement with (a) {r['hf_sequence_agreement']:.2f} / {r['hf_token_agreement']:.3f}; "
                  f"(b) {r['vision_attention']} batch {r['batch_size']} / (c) = {r['ratio_b_hf']:.2f}x; "
                  f"(c) / (a) = {r['hf_samples_per_s'] / r['a_samples_per_s']:.2f}x")
    print(f"encoding pool: {a.num_workers} workers started in {pool_start:.2f}s (once, before the model loaded); "
          f"worker encode time {rows[0]['worker_encode_ms_per_sample']:.1f} ms/sample")
    for r in rows:
        if "breakdown" in r:
            b = r["breakdown"]
            print(f"breakdown {r['config']} {r['new_tokens']} tok batch {r['batch_size']}: (b) total "
                  f"{r['n'] / r['b_samples_per_s']:.2f}s = overlap of encode {b['encode_only_s']:.2f}s and GPU "
                  f"{b['gpu_only_s']:.2f}s (vision {b['vision_only_s']:.2f}s, prefill incl. vision "
                  f"{b['prefill_only_s']:.2f}s, decode steps {b['decode_steps_s']:.2f}s)")


if __name__ == "__main__":
    main()
