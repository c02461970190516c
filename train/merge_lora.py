"""Merge a LoRA adapter into its base and prove the merged model computes what the adapter model computes.

The merged checkpoint is saved with save_pretrained, reloaded from disk through the product loader (no
strict=False anywhere), and its logits on a probe sample compared with the adapter model's.

A QLoRA adapter (trained on a 4/8-bit base, as its run_summary.json says) merges the same way, into the 16-bit base
loaded unquantized: the merged model is the adapter on the original weights. It differs from the model as trained by
the base's quantization error; the report measures that too (max_abs_diff_vs_quantized_training), for information.

    python -m train.merge_lora --model_name_or_path BASE --adapter out/stage1 --output_dir out/stage1_merged \
        [--probe_data val.json]
(--base / --model and --out / --out_dir are the same options under their older names.)
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from PIL import Image

from medvl.adapter_check import AdapterMismatch, check_adapter_fits
from medvl.checkpoint_path import CheckpointNotFound
from medvl.collate import VLCollator
from medvl.jsonio import DataError, write_json
from medvl.loading import load_model_and_processor
from train.data import load_records

PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "added_tokens.json", "chat_template.jinja", "chat_template.json", "preprocessor_config.json")


def _probe_batch(processor, probe_records: list[dict] | None):
    """One or two real records if given, else a generated image + question (deterministic)."""
    if not probe_records:
        tmp = Path(tempfile.mkdtemp()) / "probe.png"
        arr = (np.random.RandomState(0).rand(96, 128, 3) * 255).astype("uint8")
        Image.fromarray(arr).save(tmp)
        probe_records = [{"id": "probe", "image": str(tmp), "conversations": [
            {"from": "human", "value": "<image>\nIs there a lesion?"}, {"from": "gpt", "value": "yes"}], "meta": {}}]
    encoded = [processor.encode(r, train=True) for r in probe_records[:2]]
    return VLCollator(processor.pad_token_id, processor.image_token_id)(encoded)


@torch.no_grad()
def _logits(model, batch):
    model.eval()
    b = {k: v.to(next(model.parameters()).device) for k, v in batch.items() if k != "labels"}
    return model(**b).logits.float()


def _quantized_training_gap(base: str, adapter: str, dtype: str, batch, ref) -> dict:
    """For a QLoRA adapter: how far the merged 16-bit model's logits are from the quantized model it was trained as."""
    summary = Path(adapter) / "run_summary.json"
    margs = json.loads(summary.read_text()).get("args", {}).get("model", {}) if summary.exists() else {}
    kind = margs.get("quantization") or "none"
    if kind == "none":
        return {}
    try:
        qmodel, _, family = load_model_and_processor(base, dtype=dtype, quantization=kind,
                                                     quantize_vision=bool(margs.get("quantize_vision")))
        check_adapter_fits(qmodel, adapter, base, family)
        gap = (_logits(PeftModel.from_pretrained(qmodel, adapter), batch).cpu() - ref).abs().max().item()
    except ImportError as e:  # no bitsandbytes here: the merge itself is still verified
        return {"trained_quantization": kind, "max_abs_diff_vs_quantized_training": None, "note": str(e)}
    return {"trained_quantization": kind, "max_abs_diff_vs_quantized_training": gap}


def _silent(message: str) -> None:
    pass


def merge(base: str, adapter: str, out: str, probe_records: list[dict] | None = None, dtype: str = "float32",
          atol: float = 1e-4, step=_silent) -> dict:
    """`step(message)` hears each of the 5 stages as it starts (the command line prints them: a 7B merge takes
    minutes, and a silent one looks hung)."""
    step(f"[1/5] loading the base {base}")
    model, processor, family = load_model_and_processor(base, dtype=dtype)
    check_adapter_fits(model, adapter, base, family)  # one line, not PEFT's silence or size mismatches
    step(f"[2/5] loading the adapter {adapter} and computing its reference logits")
    peft_model = PeftModel.from_pretrained(model, adapter)
    batch = _probe_batch(processor, probe_records)
    ref = _logits(peft_model, batch)
    step("[3/5] merging the adapter into the base weights")
    merged = peft_model.merge_and_unload()
    in_memory = (_logits(merged, batch) - ref).abs().max().item()
    out_dir = Path(out)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    step(f"[4/5] saving to {tmp}")
    merged.save_pretrained(tmp)
    src = Path(adapter) if (Path(adapter) / "tokenizer_config.json").exists() else Path(base)
    for name in PROCESSOR_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, tmp / name)
    if not (tmp / "tokenizer_config.json").exists():  # hub base: write the processor parts we loaded
        processor.tokenizer.save_pretrained(tmp)
        processor.image_processor.save_pretrained(tmp)
    step("[5/5] reloading the saved checkpoint and comparing its logits with the adapter model's")
    reloaded, _, _ = load_model_and_processor(str(tmp), dtype=dtype)
    from_disk = (_logits(reloaded, batch) - ref).abs().max().item()
    report = {"base": base, "adapter": adapter, "out": str(out_dir), "family": family.name,
              "max_abs_diff_in_memory": in_memory, "max_abs_diff_reloaded": from_disk, "atol": atol,
              "logit_scale": ref.abs().max().item(), **_quantized_training_gap(base, adapter, dtype, batch, ref)}
    if not (in_memory <= atol and from_disk <= atol):
        shutil.rmtree(tmp)
        raise RuntimeError(f"merged model differs from the adapter model: {report}")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)  # only a verified merge appears under the final name
    write_json(out_dir / "merge_report.json", report)
    return report


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.merge_lora", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name_or_path", "--base", "--model", dest="base", required=True,
                   help="base checkpoint dir or hub id the adapter was trained on")
    p.add_argument("--adapter", required=True, help="adapter dir (train.finetune output)")
    p.add_argument("--output_dir", "--out_dir", "--out", dest="out", required=True, help="merged checkpoint dir")
    p.add_argument("--probe_data", default=None, help="records (comma-separated files) to compare logits on; "
                                                      "default: a generated image")
    p.add_argument("--dtype", default="float32", help="float32 verifies tightly; bfloat16 halves the size on disk")
    p.add_argument("--atol", type=float, default=None, help="max |logit diff| (default 1e-4 fp32, 5e-2 bf16/fp16)")
    a = p.parse_args(argv)
    probe = None
    if a.probe_data:
        try:
            probe = load_records(a.probe_data)  # comma-separated files, like --eval_data (the pipeline passes it)
        except DataError as e:
            sys.exit(f"error: --probe_data: {e}")
    atol = a.atol if a.atol is not None else (1e-4 if a.dtype == "float32" else 5e-2)
    try:
        rep = merge(a.base, a.adapter, a.out, probe, a.dtype, atol,
                    step=lambda m: print(f"merge_lora: {m}", file=sys.stderr, flush=True))
    except (CheckpointNotFound, AdapterMismatch) as e:  # a wrong path or a foreign adapter: one line, no traceback
        sys.exit(f"error: {e}")
    print(f"merged and verified: {Path(rep['out']).resolve()} (max |logit diff| {rep['max_abs_diff_reloaded']:.2e} "
          f"<= {atol})")
    if rep.get("trained_quantization"):  # QLoRA: the merged 16-bit model is not the 4/8-bit model it was trained as
        gap = rep.get("max_abs_diff_vs_quantized_training")
        print(f"trained on a {rep['trained_quantization']} base: max |logit diff| to the quantized model it was "
              f"trained as {gap:.2e}" if gap is not None else
              f"trained on a {rep['trained_quantization']} base; distance to it not measured ({rep.get('note')})")


if __name__ == "__main__":
    main()
