"""Batched greedy generation for one or more models over test.json -> <out_dir>/<model>/predictions.jsonl.

Greedy by default (reproducible; no sampling temperature), left padding, the same image resizing and chat template
as training, a real system turn. Appends as it goes and resumes: a rerun skips ids already written, and a line
cut by a kill is dropped and redone. A rerun with other settings (weights, decoding, pixel budget, prompt, dtype:
the fingerprint in run_info.json) is refused rather than mixed in (--overwrite starts fresh), and one process at a
time writes into a model's folder (eval/output_dir.py). A prompt longer than the model's context length less
max_new_tokens (or --max_len) is a per-record failure (over_length). A record that cannot be generated for
(malformed, repeated id, unreadable image, too long, a broken .jsonl line) is listed with its reason under `failed`
in run_info.json:
n_records = skipped_already_done + generated + len(failed).

    python -m eval.generate --test_data test.json --out_dir result/predictions \
        --model base=Qwen/Qwen2-VL-2B-Instruct --model stage2=Qwen/Qwen2-VL-2B-Instruct+out/stage1+out/stage2 \
        [--prompt_mode default|custom --system_prompt_file prompt.txt] [--batch_size 16] [--max_new_tokens 64]
        [--min_pixels N --max_pixels N] [--max_len N] [--overwrite] [--preset strict|llava_med|medevalkit|lmms_eval]

--preset NAME generates as that scoring protocol's own runs do (medvl/metrics/protocols/): its system turn, the
prompt suffix its rule picks per record (e.g. "Answer the question using a single word or phrase."), its
max_new_tokens; an explicit --max_new_tokens or --prompt_mode custom still wins. run_info.json records the preset and
the convention used, and the protocol tables say which preset made the predictions they score. Default: strict
(the model's own system turn, the question as it is, 64 new tokens).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import torch
from tqdm import tqdm

from medvl.jsonio import BadLine, completed_ids, read_records, write_json
from medvl.schema import record_problems
from medvl.encoding import DEFAULT_SYSTEM
from medvl.families import vision_tower
from medvl.generation import generate_batch
from medvl.loading import pixel_budget
from medvl.adapter_check import AdapterMismatch
from medvl.checkpoint_path import CheckpointNotFound
from eval.model_spec import (ModelSpec, add_model_arguments, fingerprint, load_spec_processor, load_spec_with_encoders,
                         prompt_limit, system_prompt_from_args)
from medvl.metrics.protocols import PROTOCOLS
from eval.output_dir import OutputInUse, SettingsChanged, check_folder, clear_outputs, lock_folder
from eval.prompt_batches import EncoderPool, PromptBatch, prompt_batches


def _append(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def prediction_row(rec: dict, pred: str, enc, prompt_mode: str) -> dict:
    meta = rec.get("meta") or {}
    human = [t["value"] for t in rec["conversations"] if t["from"] == "human"]
    return {"id": str(rec["id"]), "prediction": pred, "reference": rec["conversations"][-1]["value"],
            "question": rec.get("_question", human[-1].replace("<image>", "").strip() if human else ""),
            "answer_type": meta.get("answer_type"), "task": meta.get("task", "vqa"), "dataset": meta.get("dataset"),
            "ref_boxes": meta.get("boxes") or [], "image_size": list(enc.image_sizes[0]) if enc.image_sizes else None,
            "input_size": list(enc.input_sizes[0]) if enc.input_sizes else None, "prompt_mode": prompt_mode,
            **({"answers": meta["answers"]} if meta.get("answers") else {})}  # every accepted form (eval scores all)


def record_view(rec: dict) -> dict:
    """What a preset's suffix rule reads of a record: reference, dataset answer type, dataset, language."""
    meta = rec.get("meta") or {}
    return {"reference": rec["conversations"][-1]["value"], "answer_type": meta.get("answer_type"),
            "dataset": meta.get("dataset"), "lang": meta.get("q_lang")}


def apply_preset(records: list[dict], preset: str) -> list[dict]:
    """Copies of the records with the preset's prompt suffix appended to the last question (the original question is
    kept for predictions.jsonl); the records themselves are not changed."""
    proto = PROTOCOLS[preset]
    out = []
    for rec in records:
        suffix = proto.suffix_for(record_view(rec))
        if not suffix:
            out.append(rec)
            continue
        conv = [dict(t) for t in rec["conversations"]]
        k = max(i for i, t in enumerate(conv) if t["from"] == "human")
        question = conv[k]["value"].replace("<image>", "").strip()
        conv[k]["value"] = conv[k]["value"].rstrip() + suffix
        out.append({**rec, "conversations": conv, "_question": question})
    return out


def preset_system(preset: str, system_prompt):
    """The system turn generation (and perplexity) use: the preset's, unless a custom one was given."""
    own = PROTOCOLS[preset].generation.system
    return own if system_prompt is DEFAULT_SYSTEM and own is not None else system_prompt


def preset_convention(preset: str) -> dict:
    g = PROTOCOLS[preset].generation
    return {"system": g.system, "max_new_tokens": g.max_new_tokens, "suffixes": dict(g.suffixes),
            "decoding": g.decoding, "source": g.source}


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
                       compile_vision: bool = False, max_len: int | None = None, overwrite: bool = False,
                       preset: str = "strict") -> Path:
    out = out_dir / spec.name
    lock_folder(out)  # before reading the folder: a second writer would duplicate or cut what this one writes
    if overwrite:
        clear_outputs(out)
    pred_path = out / "predictions.jsonl"
    limit, limit_from = prompt_limit(spec, max_len, reserve=max_new_tokens)
    made_with = {}

    def same_settings_or_refuse(processor):
        made_with.update(fingerprint(spec, processor, system_prompt, dtype),
                         decoding={"do_sample": False, "num_beams": 1, "max_new_tokens": max_new_tokens},
                         preset={"name": preset, "suffixes": dict(PROTOCOLS[preset].generation.suffixes)})
        check_folder(out, made_with)

    pool, (model, processor, family) = load_spec_with_encoders(
        spec, num_workers, dtype=dtype, device=device, compile_vision=compile_vision, min_pixels=min_pixels,
        max_pixels=max_pixels, system_prompt=system_prompt, max_len=limit, before_load=same_settings_or_refuse)
    done = completed_ids(pred_path)
    n_records = len(records)
    records, rejected = screen_records(records)
    todo = apply_preset([r for r in records if str(r["id"]) not in done], preset)
    info = {"model": spec.name, "checkpoint": spec.checkpoint, "adapters": list(spec.adapters), "family": family.name,
            "decoding": made_with["decoding"], "prompt_mode": prompt_mode, "system_prompt": made_with["system_prompt"],
            "pixel_budget": made_with["pixel_budget"], "max_len": limit, "max_len_from": limit_from,
            "image_processor": {"size": dict(getattr(processor.image_processor, "size", {}) or {})},
            "vision": getattr(model, "vision_speed", None), "fingerprint": made_with,
            "preset": preset, "preset_convention": preset_convention(preset),
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


def budget_warning(specs: list[ModelSpec], min_pixels=None, max_pixels=None) -> str | None:
    """A loud note when the models would see images at different pixel budgets (each checkpoint / adapter saves
    its own): their scores are then not comparable on image detail alone."""
    budgets = {s.name: pixel_budget(load_spec_processor(s, min_pixels=min_pixels, max_pixels=max_pixels)[0]
                                    .image_processor) for s in specs}
    if len(set(budgets.values())) <= 1:
        return None
    each = ", ".join(f"{n} {lo}-{hi}" for n, (lo, hi) in budgets.items())
    return (f"WARNING: the models are evaluated at different pixel budgets (min-max pixels: {each}). To use one "
            f"budget for all, pass --min_pixels/--max_pixels (run_eval.sh: MIN_PIXELS=... MAX_PIXELS=...).")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--preset", choices=list(PROTOCOLS), default="strict",
                   help="generation convention of a scoring protocol: its system turn, prompt suffix and max new "
                        "tokens (default strict: this project's; see medvl/metrics/protocols/)")
    p.add_argument("--max_new_tokens", type=int, default=None,
                   help="default: the preset's (strict 64, llava_med 1024, medevalkit 1024, lmms_eval 32)")
    p.add_argument("--limit", type=int, default=None, help="first N records only (smoke runs)")
    a = p.parse_args(argv)
    system = preset_system(a.preset, system_prompt_from_args(p, a))  # --prompt_mode custom keeps its own
    convention = PROTOCOLS[a.preset].generation
    if a.max_new_tokens is None:
        a.max_new_tokens = convention.max_new_tokens
    try:
        specs = [ModelSpec.parse(text) for text in a.model]
    except ValueError as e:  # a malformed spec or a missing adapter dir: one line naming it
        sys.exit(f"error: {e}")
    try:
        for spec in specs:  # all at once: a second process on any of these folders stops now, not hours later
            lock_folder(Path(a.out_dir) / spec.name)
        warning = budget_warning(specs, a.min_pixels, a.max_pixels)
        if warning:
            print(warning, file=sys.stderr)
        records = read_records(a.test_data, bad_lines="yield")[: a.limit]
        for spec in specs:
            path = generate_for_model(spec, records, Path(a.out_dir), a.batch_size, a.max_new_tokens, system,
                                      a.prompt_mode, a.dtype, a.device, a.min_pixels, a.max_pixels,
                                      num_workers=a.num_workers, compile_vision=a.compile_vision, max_len=a.max_len,
                                      overwrite=a.overwrite, preset=a.preset)
            print(f"[{spec.name}] predictions: {path}")
    except (OutputInUse, SettingsChanged) as e:
        sys.exit(f"eval.generate: {e}")
    except (CheckpointNotFound, AdapterMismatch) as e:  # a wrong model path, a foreign adapter: no traceback
        sys.exit(f"error: {e}")
    if warning:  # again at the end: the first one has scrolled away by now
        print(warning, file=sys.stderr)


if __name__ == "__main__":
    main()
