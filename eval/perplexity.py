"""Corpus perplexity of the reference answers given the same prompt as generation.

PPL = exp(sum of answer-token NLL / number of answer tokens), logits in fp32: never a mean of per-sample
perplexities (one outlier dominates that) and never bf16 log-softmax. Answer tokens are the tokens of the reference
answer text only: the end-of-turn token `<|im_end|>` that training also learns is not counted (it says when an
answer stops, not what it says, and it would dilute the mean by one easy token per answer).

Same folder rules as generation (eval/output_dir.py): one process at a time, a fingerprint stored in
perplexity.json and compared with the folder's predictions (a mismatch is refused; --overwrite starts fresh), and
a record longer than the model's context length (or --max_len) is a named failure (over_length). The prompt is
the one generation used: the folder's predictions were made with a preset (run_info.json), so its prompt suffix
is appended here too (--preset overrides; the fingerprint refuses a preset other than the predictions').

Yes/no probabilities (calibration of closed answers, medvl/metrics/calibration.py): in the same forward, for each
record whose reference is an English yes/no answer (medvl.answers.yes_no, first word a yes/no word), the
next-token distribution at the first answer position (teacher forcing: the logits there are the distribution of
the first answer token given the prompt) gives per_sample[id]["yes_no_prob"] = {"yes": p, "no": p}: the fp32
softmax over the whole vocabulary, summed over the single-token variants of each word the tokenizer has (yes,
Yes, YES, with and without a leading space; likewise no). Summed, not the max: the variants are distinct next
tokens, so the sum is the probability that the answer starts with that word in any casing (p_yes + p_no <= 1).
A variant the tokenizer splits into several tokens is left out (its first piece, "Y" or "N", also starts other
words); the variants used are stored under "yes_no_tokens".

    python -m eval.perplexity --model stage2=BASE+out/stage1+out/stage2 --test_data test.json \
        --out_dir result/predictions [--type_mapping type_mapping.json] [--batch_size 8]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from medvl.answers import NO_WORDS, YES_WORDS, normalize_answer, yes_no
from medvl.categories import REGION_TASKS, category_names
from medvl.encoding import DEFAULT_SYSTEM, IGNORE_INDEX
from medvl.jsonio import read_json, read_records, write_json
from eval.categorize import category_order, native_fields
from eval.generate import apply_preset, preset_system, screen_records, vision_dtype
from medvl.metrics.protocols import PROTOCOLS
from medvl.adapter_check import AdapterMismatch
from medvl.checkpoint_path import CheckpointNotFound
from eval.model_spec import (ModelSpec, add_model_arguments, fingerprint, load_spec_with_encoders, prompt_limit,
                             system_prompt_from_args)
from eval.output_dir import OutputInUse, SettingsChanged, check_folder, clear_outputs, lock_folder


ANSWER_TOKENS_NOTE = "answer tokens only: the reference answer's text tokens, without the end-of-turn <|im_end|>"


YES_NO_VARIANTS = {"yes": ("yes", "Yes", "YES", " yes", " Yes", " YES"), "no": ("no", "No", "NO", " no", " No", " NO")}
YES_NO_COMBINE = "sum"


def yes_no_token_ids(tokenizer) -> dict[str, dict[str, int]]:
    """{"yes": {variant: token id}, "no": {...}}: the variants of YES_NO_VARIANTS that are one token each
    (a token is counted once). Either word may end up empty (then no probabilities are stored)."""
    out: dict[str, dict[str, int]] = {}
    seen: set[int] = set()
    for word, variants in YES_NO_VARIANTS.items():
        out[word] = {}
        for v in variants:
            ids = tokenizer.encode(v, add_special_tokens=False)
            if len(ids) == 1 and ids[0] not in seen:
                seen.add(ids[0])
                out[word][v] = ids[0]
    return out


def wants_yes_no(record: dict) -> bool:
    """The reference is an English yes/no answer: its first word is a yes/no word and the rule reads it as one
    (Chinese 是/否 answers start with other tokens than these variants)."""
    ref = str(record["conversations"][-1]["value"])
    words = normalize_answer(ref).split()
    return bool(words) and words[0] in YES_WORDS | NO_WORDS and yes_no(ref) is not None


@torch.no_grad()
def answer_scores(model, batch: dict, end_token_id: int, yes_no_ids: dict[str, list[int]] | None = None
                  ) -> tuple[list[float], list[int], list[dict | None]]:
    """Per sample: (sum of NLL over answer tokens, number of answer tokens, {"yes": p, "no": p} or None), fp32.
    The labels mark the answer and its closing `end_token_id`; that closing token is left out of the NLL. The
    probabilities are the softmax at the position whose logits predict the first labelled token, summed over each
    word's token ids (None without yes_no_ids, or when either word has no ids)."""
    labels = batch.pop("labels")
    logits = model(**batch).logits[:, :-1].float()
    shifted = labels[:, 1:]
    target = shifted.masked_fill(shifted == end_token_id, IGNORE_INDEX)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none")
    mask = target != IGNORE_INDEX
    probs: list[dict | None] = [None] * labels.shape[0]
    if yes_no_ids and all(yes_no_ids.values()):
        labelled = shifted != IGNORE_INDEX
        first = labelled.int().argmax(1)  # the first labelled position of each row
        p = logits[torch.arange(labels.shape[0], device=logits.device), first].softmax(-1)
        for b in range(labels.shape[0]):
            if labelled[b].any():
                probs[b] = {w: float(p[b, ids].sum()) for w, ids in yes_no_ids.items()}
    return (nll * mask).sum(1).double().tolist(), mask.sum(1).tolist(), probs


def corpus_ppl(nll_sums: list[float], counts: list[int]) -> dict:
    tokens = int(sum(counts))
    if tokens == 0:
        raise ValueError("perplexity needs at least one answer token")
    total = float(sum(nll_sums))
    return {"ppl": math.exp(total / tokens), "nll_sum": total, "tokens": tokens, "n": len(counts)}


def category_keys(entry: dict | None, task: str = "vqa", dataset: bool = False) -> list[str]:
    """The categories an answer falls in: medvl.categories.category_names, the rule of the metric tables (a region
    task or a caption is its own category, never overall/open/closed). entry: its type_mapping entry (a VQA answer
    without one has no category); dataset: add "dataset/<name>" (more than one dataset is scored)."""
    entry = entry or {}
    answer_type = entry.get("answer_type")
    if task == "vqa" and not answer_type:
        return []
    return category_names(task, answer_type, entry.get("closed_type") if answer_type == "closed" else None,
                          native_fields(entry), str(entry.get("dataset") or "unknown") if dataset else None)


def perplexity_for_model(spec: ModelSpec, records: list[dict], out_dir: Path, type_mapping: dict | None = None,
                         batch_size: int = 8, dtype="auto", device: str | None = None, system_prompt=DEFAULT_SYSTEM,
                         progress: bool = True, num_workers: int | None = None, compile_vision: bool = False,
                         min_pixels=None, max_pixels=None, max_len: int | None = None, overwrite: bool = False,
                         preset: str | None = None) -> dict:
    """preset: the generation preset whose prompt suffix (and system turn, unless system_prompt is a custom one) the
    prompts get; None: the one the folder's predictions were made with (run_info.json), else strict."""
    out = out_dir / spec.name
    lock_folder(out)
    if overwrite:
        clear_outputs(out)
    if preset is None:
        preset = predictions_preset(out)
    system_prompt = preset_system(preset, system_prompt)  # the preset's system turn, as eval.generate gives it
    limit, limit_from = prompt_limit(spec, max_len)
    made_with = {}

    def same_settings_or_refuse(processor):
        made_with.update(fingerprint(spec, processor, system_prompt, dtype),
                         preset={"name": preset, "suffixes": dict(PROTOCOLS[preset].generation.suffixes)})
        check_folder(out, made_with)

    pool, (model, processor, _) = load_spec_with_encoders(
        spec, num_workers, dtype=dtype, device=device, compile_vision=compile_vision, system_prompt=system_prompt,
        min_pixels=min_pixels, max_pixels=max_pixels, max_len=limit, before_load=same_settings_or_refuse)
    end_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    variants = yes_no_token_ids(processor.tokenizer)
    yn_ids = {w: list(v.values()) for w, v in variants.items()}
    dev = next(model.parameters()).device
    records, rejected = screen_records(records)  # malformed / repeated ids: named, as generation names them
    # box answers are scored by grounding metrics, not by the PPL of their text
    text_records = apply_preset([r for r in records if (r.get("meta") or {}).get("task") != "grounding"], preset)
    per_sample: dict[str, dict] = {}
    failed: dict[str, str] = dict(rejected)
    bar = tqdm(total=len(text_records), desc=f"perplexity[{spec.name}]", disable=not progress)
    # the generation path's batching: length-sorted, encoded by workers ahead of the GPU
    with pool:
        for batch in pool.batches(text_records, batch_size, train=True, padding_side="right",
                                  pixel_dtype=vision_dtype(model)):
            failed.update(batch.failed)
            if batch.inputs is not None:
                sums, counts, probs = answer_scores(model, {k: v.to(dev) for k, v in batch.inputs.items()}, end_id,
                                                    yn_ids)
                for r, s, c, pr in zip(batch.records, sums, counts, probs):
                    per_sample[str(r["id"])] = {"nll_sum": s, "tokens": int(c)}
                    if pr is not None and wants_yes_no(r):
                        per_sample[str(r["id"])]["yes_no_prob"] = pr
            bar.update(len(batch.records) + len(batch.failed))
    bar.close()
    ids = list(per_sample)
    result = {"model": spec.name, "overall": corpus_ppl([per_sample[i]["nll_sum"] for i in ids],
                                                        [per_sample[i]["tokens"] for i in ids]),
              "by_category": {}, "tokens_counted": ANSWER_TOKENS_NOTE, "max_len": limit, "max_len_from": limit_from,
              "fingerprint": made_with, "preset": preset, "failed": failed,
              "yes_no_tokens": {"variants": {w: list(v) for w, v in variants.items()}, "combine": YES_NO_COMBINE,
                                "position": "first answer token, teacher forcing on the generation prompt",
                                "records": "reference an English yes/no answer (medvl.answers.yes_no)",
                                **({} if all(variants.values()) else
                                   {"missing": "the tokenizer has no single-token variant of "
                                               + " / ".join(w for w, v in variants.items() if not v)})},
              "per_sample": per_sample}
    if type_mapping:
        tasks = {str(r["id"]): (r.get("meta") or {}).get("task") or "vqa" for r in text_records}
        entries = {rid: type_mapping.get(rid) or {} for rid in ids}
        several = len({e.get("dataset") for rid, e in entries.items() if tasks[rid] not in REGION_TASKS}) > 1
        groups: dict[str, list[str]] = {}
        for rid in ids:
            for key in category_keys(entries[rid], tasks[rid], several):
                groups.setdefault(key, []).append(rid)
        result["by_category"] = {k: corpus_ppl([per_sample[i]["nll_sum"] for i in v], [per_sample[i]["tokens"] for i in v])
                                 for k, v in sorted(groups.items(), key=lambda kv: category_order(kv[0]))}
    write_json(out / "perplexity.json", result)
    return result


def predictions_preset(folder: Path) -> str:
    """The preset the folder's predictions were made with (run_info.json), strict when there are none."""
    info = read_json(folder / "run_info.json") if (folder / "run_info.json").exists() else None
    name = (info or {}).get("preset") or "strict"
    return name if name in PROTOCOLS else "strict"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--type_mapping", default=None)
    p.add_argument("--limit", type=int, default=None, help="first N records only, as eval.generate --limit")
    p.add_argument("--preset", choices=list(PROTOCOLS), default=None,
                   help="prompt suffix of this generation preset (default: the preset the folder's predictions were "
                        "made with, from run_info.json; strict without predictions)")
    a = p.parse_args(argv)
    system = system_prompt_from_args(p, a)
    try:
        specs = [ModelSpec.parse(text) for text in a.model]
    except ValueError as e:  # a malformed spec or a missing adapter dir: one line naming it
        sys.exit(f"error: {e}")
    try:
        for spec in specs:  # all at once: a second process on any of these folders stops now
            lock_folder(Path(a.out_dir) / spec.name)
        records = read_records(a.test_data, bad_lines="yield")
        records = records[: a.limit] if a.limit else records  # the same records generation scored
        tm = read_json(a.type_mapping) if a.type_mapping else None
        for spec in specs:
            res = perplexity_for_model(spec, records, Path(a.out_dir), tm, a.batch_size, a.dtype, a.device, system,
                                       num_workers=a.num_workers, compile_vision=a.compile_vision,
                                       min_pixels=a.min_pixels, max_pixels=a.max_pixels, max_len=a.max_len,
                                       overwrite=a.overwrite, preset=a.preset)
            o = res["overall"]
            print(f"[{res['model']}] perplexity {o['ppl']:.3f} over {o['tokens']} answer tokens ({o['n']} answers; "
                  f"<|im_end|> not counted)")
    except (OutputInUse, SettingsChanged) as e:
        sys.exit(f"eval.perplexity: {e}")
    except (CheckpointNotFound, AdapterMismatch) as e:  # a wrong model path, a foreign adapter: no traceback
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
