"""Does a LoRA adapter belong on this base? Checked before PeftModel.from_pretrained.

PEFT loads an adapter from another family without a word when the module names and shapes happen to agree (a
Qwen2-VL adapter on a Qwen2.5-VL base runs, and is wrong), and ends in one `size mismatch` line per tensor when
they do not. Two checks, neither loads a tensor:
  (a) the family the adapter was trained on (run_summary.json of train.finetune; else the base class PEFT records
      in adapter_config.json's auto_mapping) against the base's;
  (b) each saved tensor's shape (safetensors header) against the base module it goes onto.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from safetensors import safe_open

from medvl.families import ModelFamily

ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
# lora_A.weight [r, in, ...]: the input side; lora_B.weight [out, r, ...]: the output side (Linear and Conv);
# lora_embedding_A [r, num_embeddings], lora_embedding_B [embedding_dim, r] (Embedding)
_LORA_SIDE = {"lora_A.weight": ("in", 1), "lora_B.weight": ("out", 0),
              "lora_embedding_A": ("in", 1), "lora_embedding_B": ("out", 0)}


class AdapterMismatch(ValueError):
    """An adapter that does not belong on the base it is loaded onto; one line naming both."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _dims(module) -> dict[str, int] | None:
    """{"in": N, "out": M} of a Linear (bitsandbytes' too), Conv or Embedding; None for other modules."""
    for a, b in (("in_features", "out_features"), ("in_channels", "out_channels"),
                 ("num_embeddings", "embedding_dim")):
        if isinstance(getattr(module, a, None), int) and isinstance(getattr(module, b, None), int):
            return {"in": getattr(module, a), "out": getattr(module, b)}
    return None


def _module_of(key: str) -> tuple[str, str]:
    """(base module path, what the tensor is) of a saved PEFT key:
    base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight
      -> ("model.language_model.layers.0.self_attn.q_proj", "lora_A.weight")."""
    name = key[len(_PEFT_PREFIX):] if key.startswith(_PEFT_PREFIX) else key
    name = re.sub(r"\.modules_to_save\.[^.]+(?=\.)", "", name)  # older PEFT kept the wrapper in the saved key
    for suffix in _LORA_SIDE:
        if name.endswith("." + suffix):
            return name[: -len(suffix) - 1], suffix
    mod, _, param = name.rpartition(".")
    return mod, param


def _shape_problem(base_model, key: str, shape: list[int]) -> str | None:
    """What does not fit for one saved tensor, or None."""
    mod_name, what = _module_of(key)
    try:
        module = base_model.get_submodule(mod_name)
    except AttributeError:
        return f"{mod_name} is not a module of the base"
    if what in _LORA_SIDE:
        side, axis = _LORA_SIDE[what]
        dims = _dims(module)
        if dims is None or len(shape) <= axis:
            return None
        if dims[side] != shape[axis]:
            return f"{mod_name} expects {side}_features {dims[side]}, the adapter has {shape[axis]}"
        return None
    if what == "lora_magnitude_vector" or what.startswith("lora_"):
        return None  # DoRA magnitudes etc.: their size follows the out side checked above
    param = getattr(module, what, None)  # a fully trained module (modules_to_save): its whole weight
    if param is None or not getattr(param, "is_floating_point", lambda: False)():
        return None  # not a parameter, or a quantized (packed) one whose shape says nothing
    if list(param.shape) != list(shape):
        return f"{mod_name}.{what} expects shape {list(param.shape)}, the adapter has {shape}"
    return None


def check_adapter_fits(model, adapter_dir: str | Path, base_path: str, family: ModelFamily) -> None:
    """Raise AdapterMismatch when the adapter at `adapter_dir` was trained on another family than `family` (the
    base at `base_path`, loaded as `model`) or a saved tensor's shape differs from its base module's."""
    adir = Path(adapter_dir)
    if not (adir / "adapter_config.json").is_file():
        raise AdapterMismatch(f"{adapter_dir} holds no adapter_config.json: not an adapter folder")
    summary = _read_json(adir / "run_summary.json")
    config = _read_json(adir / "adapter_config.json")
    trained_on = summary.get("base") or config.get("base_model_name_or_path") or "an unrecorded base"
    base_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    if summary.get("family") and summary["family"] != family.name:
        raise AdapterMismatch(f"adapter {adapter_dir} was trained on {summary['family']} ({trained_on}) but the base "
                              f"{base_path} is {family.name}")
    recorded_class = (config.get("auto_mapping") or {}).get("base_model_class")
    if not summary.get("family") and recorded_class and recorded_class != type(base_model).__name__:
        raise AdapterMismatch(f"adapter {adapter_dir} was trained on {recorded_class} ({trained_on}) but the base "
                              f"{base_path} is {type(base_model).__name__} ({family.name})")
    weights = adir / ADAPTER_WEIGHTS
    if not weights.is_file():
        return  # an adapter_model.bin (old PEFT): no header to read; PEFT's own load reports a mismatch
    problems = []
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            problem = _shape_problem(base_model, key, list(f.get_slice(key).get_shape()))
            if problem:
                problems.append(problem)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise AdapterMismatch(f"adapter {adapter_dir} does not fit base {base_path}: {problems[0]} (trained on "
                              f"{trained_on}){more}")
