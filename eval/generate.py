"""Batched greedy generation for one or more models over test.json -> <out_dir>/<model>/predictions.jsonl.

Greedy by default (reproducible; no sampling temperature), left padding, the same image resizing and chat template
as training, a real system turn. Appends as it goes and resumes: a rerun skips ids already written, and a line
cut by a kill is dropped and redone. A record that cannot be generated for (malformed, repeated id, unreadable image,
a broken .jsonl line) is listed with its reason under `failed` in run_info.json:
n_records = skipped_already_done + generated + len(failed).

    python -m eval.generate --test_data test.json --out_dir result/predictions \
        --model base=Qwen/Qwen2-VL-2B-Instruct --model stage2=Qwen/Qwen2-VL-2B-Instruct+out/stage1+out/stage2 \
        [--prompt_mode default|custom --system_prompt_file prompt.txt] [--batch_size 16] [--max_new_tokens 64]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Iterator

import torch
from tqdm import tqdm

from data_process.io import BadLine, read_records, write_json
from data_process.schema import record_problems
from train.preprocess import DEFAULT_SYSTEM
from train.validation import generate_batch
from .model_spec import ModelSpec, add_model_arguments, load_spec_with_encoders
from .prompt_batches import EncoderPool, PromptBatch, prompt_batches


def completed_ids(path: Path) -> set[str]:
    """Ids already in a predictions file; a trailing partial line (killed mid-write) is cut off."""
    if not path.exists():
        return set()
    done, good_bytes = set(), 0
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                done.add(str(json.loads(line)["id"]))
            except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
                break
            good_bytes += len(line)
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return done


def _append(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def prediction_row(rec: dict, pred: str, enc, prompt_mode: str) -> dict:
    meta = rec.get("meta") or {}
    human = [t["value"] for t in rec["conversations"] if t["from"] == "human"]
    return {"id": str(rec["id"]), "prediction": pred, "reference": rec["conversations"][-1]["value"],
            "question": human[-1].replace("<image>", "").strip() if human else "",
            "answer_type": meta.get("answer_type"), "task": meta.get("task", "vqa"), "dataset": meta.get("dataset"),
            "ref_boxes": meta.get("boxes") or [], "image_size": list(enc.image_sizes[0]) if enc.image_sizes else None,
            "input_size": list(enc.input_sizes[0]) if enc.input_sizes else None, "prompt_mode": prompt_mode}


def screen_records(records: list) -> tuple[list[dict], dict[str, str]]:
    """(records generation can take, {id: reason} for the rest): broken .jsonl lines, malformed records (no answer
    to score against, wrong <image> tag count, ...) and repeated ids (one prediction per id) are named, not dropped."""
    ok, failed, seen = [], {}, set()
    for i, rec in enumerate(records):
        if isinstance(rec, BadLine):
            failed[rec.where] = f"{rec.reason}: {rec.detail}"
            continue
        rid = str(rec.get("id")) if isinstance(rec, dict) and rec.get("id") is not None else f"<record #{i}>"
        problems = record_problems(rec)
        if problems:
            failed[rid if rid not in failed else f"{rid} (#{i})"] = "malformed_record: " + "; ".join(problems)
        elif rid in seen:
            failed[f"{rid} (#{i})"] = "duplicate_id: an earlier record has this id"
        else:
            seen.add(rid)
            ok.append(rec)
    return ok, failed


def vision_dtype(model) -> torch.dtype | None:
    """The dtype the vision tower casts pixels to (its first floating parameter), None for a text-only model."""
    from train.models import vision_tower

    visual = vision_tower(model)
    return next((p.dtype for p in visual.parameters() if p.is_floating_point()), None) if visual else None


def generate_stream(model, processor, family, records: list[dict], batch_size: int, max_new_tokens: int,
                    num_workers: int | None = None, sort_by_length: bool = True, return_ids: bool = False,
                    pool: EncoderPool | None = None, **generate_kwargs) -> Iterator[tuple[PromptBatch, list]]:
    """(batch, its answers) per length-sorted batch, the next batches encoded by workers meanwhile
    (`pool`'s, or workers started for this call)."""
    for batch in prompt_batches(processor, records, batch_size, num_workers, pool=pool, sort_by_length=sort_by_length,
                                pixel_dtype=vision_dtype(model)):
        preds = generate_batch(model, processor, batch.inputs, max_new_tokens, return_ids, **generate_kwargs) \
            if batch.inputs is not None else []
        yield batch, preds


def generate_for_model(spec: ModelSpec, records: list[dict], out_dir: Path, batch_size: int = 8,
                       max_new_tokens: int = 64, system_prompt=DEFAULT_SYSTEM, prompt_mode: str = "default",
                       dtype="auto", device: str | None = None, min_pixels=None, max_pixels=None,
                       sort_by_length: bool = True, progress: bool = True, num_workers: int | None = None,
                       compile_vision: bool = False) -> Path:
    out = out_dir / spec.name
    out.mkdir(parents=True, exist_ok=True)
    pred_path = out / "predictions.jsonl"
    done = completed_ids(pred_path)
    n_records = len(records)
    records, rejected = screen_records(records)
    todo = [r for r in records if str(r["id"]) not in done]
    pool, (model, processor, family) = load_spec_with_encoders(
        spec, num_workers, dtype=dtype, device=device, compile_vision=compile_vision, min_pixels=min_pixels,
        max_pixels=max_pixels, system_prompt=system_prompt, max_len=10 ** 9)
    info = {"model": spec.name, "checkpoint": spec.checkpoint, "adapters": list(spec.adapters), "family": family.name,
            "decoding": {"do_sample": False, "num_beams": 1, "max_new_tokens": max_new_tokens},
            "prompt_mode": prompt_mode, "system_prompt": None if system_prompt is DEFAULT_SYSTEM else system_prompt,
            "image_processor": {"size": dict(getattr(processor.image_processor, "size", {}) or {})},
            "vision": getattr(model, "vision_speed", None),
            "n_records": n_records, "already_done": len(done), "skipped_already_done": len(records) - len(todo)}
    write_json(out / "run_info.json", info)
    failed = dict(rejected)
    t0, generated, waited = time.time(), 0, 0.0
    bar = tqdm(total=len(todo), desc=f"generate[{spec.name}]", disable=not progress)
    with pool:
        for batch, preds in generate_stream(model, processor, family, todo, batch_size, max_new_tokens,
                                            sort_by_length=sort_by_length, pool=pool):
            failed.update(batch.failed)
            waited += batch.wait_s
            if batch.records:
                _append(pred_path, [prediction_row(r, p, e, prompt_mode)
                                    for r, e, p in zip(batch.records, batch.encoded, preds)])
                generated += len(batch.records)
            bar.update(len(batch.records) + len(batch.failed))
    bar.close()
    # waited_for_encoding_s: time the GPU sat idle for prompts (if large, raise --num_workers)
    info.update(seconds=round(time.time() - t0, 2), waited_for_encoding_s=round(waited, 2), generated=generated,
                failed=failed)
    assert n_records == info["skipped_already_done"] + generated + len(failed), "generation lost records"
    write_json(out / "run_info.json", info)
    if failed:
        print(f"[{spec.name}] {len(failed)} records could not be encoded (listed in run_info.json)")
    del model
    return pred_path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--prompt_mode", choices=["default", "custom"], default="default",
                   help="default: the model's own system prompt; custom: --system_prompt_file")
    p.add_argument("--system_prompt_file", default=None)
    p.add_argument("--min_pixels", type=int, default=None, help="default: the value the checkpoint/adapter saved")
    p.add_argument("--max_pixels", type=int, default=None, help="default: the value the checkpoint/adapter saved")
    p.add_argument("--limit", type=int, default=None, help="first N records only (smoke runs)")
    a = p.parse_args(argv)
    system = DEFAULT_SYSTEM
    if a.prompt_mode == "custom":
        if not a.system_prompt_file:
            p.error("--prompt_mode custom needs --system_prompt_file")
        system = Path(a.system_prompt_file).read_text().strip()
    records = read_records(a.test_data, bad_lines="yield")[: a.limit]
    for text in a.model:
        spec = ModelSpec.parse(text)
        path = generate_for_model(spec, records, Path(a.out_dir), a.batch_size, a.max_new_tokens, system,
                                  a.prompt_mode, a.dtype, a.device, a.min_pixels, a.max_pixels,
                                  num_workers=a.num_workers, compile_vision=a.compile_vision)
        print(f"[{spec.name}] predictions: {path}")


if __name__ == "__main__":
    main()
