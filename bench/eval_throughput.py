"""Evaluation speed: the per-sample `generate` loop vs the project's eval path (eval/generate.py), same data, one process.

Both paths decode exactly N new tokens (EOS suppressed with min_new_tokens), greedy. Reported: samples/s, new
tokens/s, peak memory, the ratio b/a, and how often (b)'s tokens equal (a)'s (bf16 batched vs one-by-one numerics can
flip near-ties; fp32 equality is a CI test).

    python -m bench.eval_throughput --config bench/configs/qwen2_vl_2b.json --n 64 --new_tokens 8 64 --batch_size 64
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


def per_sample(model, processor, records, new_tokens):
    """(a) the common loop: one record, one generate call."""
    from train.validation import greedy_generate
    out = []
    for r in records:
        out += greedy_generate(model, processor, [r], 1, new_tokens, return_ids=True, min_new_tokens=new_tokens)
    return out


def batched(model, processor, records, new_tokens, batch_size, num_workers=8):
    """(b) the eval path of eval/generate.py: threaded encoding, length-sorted left-padded batches."""
    from eval.generate import encode_prompts
    from train.validation import greedy_generate
    enc, failed = encode_prompts(processor, records, num_workers)
    assert not failed, failed
    ids = greedy_generate(model, processor, [r for r, _ in enc], batch_size, new_tokens,
                          encoded=[e for _, e in enc], return_ids=True, min_new_tokens=new_tokens)
    by_id = {r["id"]: t for (r, _), t in zip(enc, ids)}
    return [by_id[r["id"]] for r in records]


def timed(fn, *args, repeats=1):
    """Median wall time over `repeats` passes (each synchronised), peak memory, last result."""
    times, result = [], None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        _sync()
        t0 = time.perf_counter()
        result = fn(*args)
        _sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else float("nan")
    return statistics.median(times), peak, result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", default=None, help="an existing checkpoint dir instead of building one")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--new_tokens", type=int, nargs="+", default=[8, 64])
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--num_workers", type=int, default=8, help="encoding threads of path (b)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of the batched path (median)")
    p.add_argument("--repeats_a", type=int, default=3, help="timed repeats of the per-sample loop (median)")
    p.add_argument("--out", default="bench/results/eval_throughput.json")
    a = p.parse_args(argv)

    from bench.random_checkpoint import build
    from train.loader import load_model_and_processor

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tmp = Path(tempfile.mkdtemp())
    ckpt = a.checkpoint or str(build(a.config, str(tmp / "ckpt"), device=device))
    model, processor, _ = load_model_and_processor(ckpt, dtype="bfloat16", attn_implementation="sdpa")
    model = model.to(device).eval()
    records = make_records(a.n, tmp)
    rows = []
    for k in a.new_tokens:
        per_sample(model, processor, records[:2], k)  # warm-up both paths
        batched(model, processor, records[:4], k, a.batch_size, a.num_workers)
        ta, ma, ids_a = timed(per_sample, model, processor, records, k, repeats=a.repeats_a)
        tb, mb, ids_b = timed(batched, model, processor, records, k, a.batch_size, a.num_workers, repeats=a.repeats)
        seq_agree = sum(x == y for x, y in zip(ids_a, ids_b)) / len(records)
        tok_agree = sum(sum(u == v for u, v in zip(x, y)) for x, y in zip(ids_a, ids_b)) / sum(len(x) for x in ids_a)
        rows.append({"config": Path(a.config).stem, "new_tokens": k, "n": a.n, "repeats_a": a.repeats_a, "repeats_b": a.repeats, "batch_size": a.batch_size, "num_workers": a.num_workers,
                     "a_samples_per_s": a.n / ta, "b_samples_per_s": a.n / tb, "a_tokens_per_s": a.n * k / ta,
                     "b_tokens_per_s": a.n * k / tb, "ratio": ta / tb, "a_peak_gib": ma, "b_peak_gib": mb,
                     "sequence_agreement": seq_agree, "token_agreement": tok_agree,
                     "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"})
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    prev = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps(prev + rows, indent=2))
    print("\n| model | new tok | (a) samples/s | (b) samples/s | ratio b/a | peak GiB a / b | seq agree | tok agree |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['new_tokens']} | {r['a_samples_per_s']:.2f} | {r['b_samples_per_s']:.1f} | "
              f"{r['ratio']:.1f}x | {r['a_peak_gib']:.1f} / {r['b_peak_gib']:.1f} | {r['sequence_agreement']:.2f} | "
              f"{r['token_agreement']:.3f} |")


if __name__ == "__main__":
    main()
