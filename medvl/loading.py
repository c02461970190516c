"""Load a Qwen-VL checkpoint (local path or hub id) and its processor, the same way for training and evaluation.

Without torchvision, transformers 5.x cannot build the stock Qwen-VL processor (its video slot needs torchvision),
so we try `AutoProcessor` first and fall back to the tokenizer + image processor, which is all an image-only
pipeline needs. Encoding itself lives in medvl/encoding.py and uses only those two components.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from medvl.checkpoint_path import resolve_checkpoint
from medvl.encoding import VLProcessor
from medvl.families import ModelFamily, get_family
from medvl.quantization import bnb_config, check_quantized, compute_dtype_for, kept_16bit_modules

log = logging.getLogger(__name__)


def _read_chat_template(path: str) -> str | None:
    """The chat template shipped beside a processor (chat_template.jinja / chat_template.json), if any."""
    def fetch(name):
        p = Path(path) / name
        if p.exists():
            return p
        if Path(path).exists():
            return None
        try:  # a hub id (cache or network, as the user's HF settings allow)
            from huggingface_hub import hf_hub_download
            return Path(hf_hub_download(path, name))
        except Exception:
            return None

    if (p := fetch("chat_template.jinja")) is not None:
        return p.read_text()
    if (p := fetch("chat_template.json")) is not None:
        return json.loads(p.read_text()).get("chat_template")
    return None


def set_pixel_budget(image_processor, min_pixels: int | None, max_pixels: int | None) -> None:
    """Apply min/max pixels on either image-processor generation (size dict in 5.x, attributes before)."""
    if min_pixels is None and max_pixels is None:
        return
    size = dict(getattr(image_processor, "size", None) or {})
    if min_pixels is not None:
        size["shortest_edge"] = min_pixels
        if hasattr(image_processor, "min_pixels"):
            image_processor.min_pixels = min_pixels
    if max_pixels is not None:
        size["longest_edge"] = max_pixels
        if hasattr(image_processor, "max_pixels"):
            image_processor.max_pixels = max_pixels
    image_processor.size = size


def pixel_budget(image_processor) -> tuple[int, int]:
    """(min, max) pixels as set_pixel_budget stores them (size dict in 5.x, attributes before); Qwen-VL defaults."""
    size = getattr(image_processor, "size", None) or {}
    lo = getattr(image_processor, "min_pixels", None) or size.get("shortest_edge") or 56 * 56
    hi = getattr(image_processor, "max_pixels", None) or size.get("longest_edge") or 28 * 28 * 1280
    return int(lo), int(hi)


def load_processor_parts(path: str, min_pixels: int | None = None, max_pixels: int | None = None,
                         trust_remote_code: bool = False):
    """(tokenizer, image_processor) from a checkpoint; AutoProcessor when it can be built, else the parts."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    try:
        proc = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        tok, improc = proc.tokenizer, proc.image_processor
        template = getattr(proc, "chat_template", None)
    except (ImportError, ValueError, TypeError, OSError, AttributeError) as e:
        log.debug("AutoProcessor unavailable (%s); using tokenizer + image processor (image-only)", type(e).__name__)
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        try:
            improc = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        except ImportError:  # transformers <= 5.17 maps Qwen2VLImageProcessor to its torchvision class only
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
            improc = Qwen2VLImageProcessorPil.from_pretrained(path)
        template = None
    if not getattr(tok, "chat_template", None):
        tok.chat_template = template or _read_chat_template(path)
    if not tok.chat_template:
        raise ValueError(f"{path}: no chat template found (tokenizer, chat_template.jinja or chat_template.json)")
    set_pixel_budget(improc, min_pixels, max_pixels)
    return tok, improc


def load_processor(path: str, family: str | ModelFamily = "auto", **kw):
    """A VLProcessor (medvl/encoding.py) for the checkpoint at `path`."""
    from transformers import AutoConfig

    # a known family needs only the processor files (an adapter dir has no config.json); "auto" reads config.json
    path = resolve_checkpoint(path, "config.json" if family == "auto" else None)
    fam = family if isinstance(family, ModelFamily) else (
        get_family(AutoConfig.from_pretrained(path, trust_remote_code=kw.get("trust_remote_code", False)))
        if family == "auto" else get_family(family))
    pix = {k: kw.pop(k) for k in ("min_pixels", "max_pixels", "trust_remote_code") if k in kw}
    tok, improc = load_processor_parts(path, **pix)
    return VLProcessor(tok, improc, fam, **kw)


def load_model_and_processor(path: str, family: str = "auto", dtype="auto", attn_implementation: str | None = None,
                             device_map=None, trust_remote_code: bool = False, min_pixels: int | None = None,
                             max_pixels: int | None = None, quantization: str = "none", quantize_vision: bool = False,
                             **processor_kw):
    """(model, VLProcessor, family) for a local checkpoint dir or a hub id.

    quantization "4bit" | "8bit": the LLM through bitsandbytes (medvl/quantization.py), the vision tower 16-bit unless
    quantize_vision; loaded onto `device_map` (default: the current CUDA device, else the CPU)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    path = resolve_checkpoint(path)  # one line for a missing folder / unreachable hub id, before transformers' retries
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    fam = get_family(config)
    if family != "auto" and get_family(family).name != fam.name:
        raise ValueError(f"{path} is a {fam.name} checkpoint (model_type {config.model_type!r}), not {family}")
    if isinstance(dtype, str) and dtype not in ("auto",):
        dtype = getattr(torch, dtype)
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization not in (None, "none"):
        compute = compute_dtype_for(dtype if isinstance(dtype, torch.dtype) else torch.bfloat16)
        kwargs["quantization_config"] = bnb_config(quantization, compute, kept_16bit_modules(config, fam, quantize_vision))
        if device_map is None:  # bitsandbytes quantizes while placing the weights: they need a device up front
            device_map = {"": torch.cuda.current_device() if torch.cuda.is_available() else "cpu"}
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    if "quantization_config" in kwargs:
        log.info("%s loaded in %s: %s", path, quantization, check_quantized(model, fam, quantize_vision))
    processor = load_processor(path, fam, min_pixels=min_pixels, max_pixels=max_pixels,
                               trust_remote_code=trust_remote_code, **processor_kw)
    return model, processor, fam
