"""Model-family registry: the ONE place that knows what differs between Qwen-VL families.

A family holds its module names (LoRA targets, component patterns), where its vision tower, blocks and merger sit
(accessors: `family.vision_tower(model)`, `.vision_blocks`, `.merger`, `.spatial_merge_size`), its box text format
(`family.format_box`, `.join_boxes`, `.parse_boxes`) and capability flags (`deepstack`, `supports_vision_cache`).
Nothing outside this module branches on a family name, a model_type or a box format: it asks the family.

Module selection is by regex anchored on the tower name (never a bare suffix: Qwen2.5-VL's ViT MLP also has
gate/up/down_proj), resolved against the loaded model so a moved path fails loudly instead of training nothing.
Modules are found by name suffix, so the same accessor works on a bare model (`model.visual` in transformers 4.x,
`model.model.visual` in 5.x) and a PEFT-wrapped one (`base_model.model.model.visual`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable

import torch.nn as nn

# One LLM linear = "<...>language_model.layers.N.(self_attn|mlp).<name>_proj"
_LLM_PROJ = {
    "attn": r"self_attn\.(q|k|v|o)_proj",
    "ffn": r"mlp\.(gate|up|down)_proj",
}


@dataclass(frozen=True)
class ModelFamily:
    name: str
    label: str                       # how people write it, for messages ("Qwen2.5-VL")
    model_types: tuple[str, ...]     # config.model_type values of this family
    merger_regex: str                # Stage 1 LoRA targets (visual merger linears)
    vision_regex: str                # the whole vision tower (frozen unless asked)
    box_format: str                  # "qwen2" | "json_abs" | "json_rel"
    merger_block_regex: str = r"(^|\.)visual\.merger(\.|$)"      # every merger parameter (--train_merger full)
    vision_lora_regex: str = r"(^|\.)visual\.blocks\.\d+\."       # ViT linears (--train_vision lora)
    llm_full_regex: str = r"(^|\.)(language_model|lm_head)(\.|$)"  # every LLM parameter (--train_llm full)
    box_scale: int = 1000            # relative box grid, for the relative formats
    default_system_prompt: str | None = "You are a helpful assistant."
    tower_attr: str = "visual"       # attribute holding the vision tower (ViT blocks + merger)
    blocks_attr: str = "blocks"      # the tower's ModuleList of ViT blocks
    merger_attr: str = "merger"      # the tower's patch merger (vision features -> LLM embeddings)
    deepstack_attr: str | None = None  # Qwen3-VL: extra mergers whose outputs feed several LLM layers

    def llm_regex(self, targets: Iterable[str] = ("attn", "ffn")) -> str:
        targets = list(targets)
        unknown = [t for t in targets if t not in _LLM_PROJ]
        if unknown or not targets:
            raise ValueError(f"--lora_targets must be a non-empty subset of {sorted(_LLM_PROJ)}, got {targets}")
        alts = "|".join(_LLM_PROJ[t] for t in targets)
        return rf"(^|\.)language_model\.layers\.\d+\.({alts})$"

    # -- capability flags ---------------------------------------------------------------------
    @property
    def deepstack(self) -> bool:
        """Merged vision features also feed several LLM layers (not only the image-token embeddings)."""
        return self.deepstack_attr is not None

    @property
    def supports_vision_cache(self) -> bool:
        """Whether the merger output alone stands for an image (train/vision_cache.py): not with deepstack."""
        return not self.deepstack

    # -- where the vision modules sit in a loaded model ----------------------------------------
    def vision_tower(self, model) -> nn.Module:
        """The vision tower of a loaded model of this family, wrapped (PEFT) or not."""
        hits = [n for n, _ in model.named_modules() if n == self.tower_attr or n.endswith("." + self.tower_attr)]
        if not hits:
            raise ValueError(f"no {self.tower_attr!r} module in the loaded {self.name} model; module paths differ "
                             f"between transformers versions: update the registry (medvl/families.py)")
        return model.get_submodule(min(hits, key=len))  # the outermost: a tower may hold a `.visual` of its own

    def _tower_part(self, model, attr: str) -> nn.Module:
        tower = self.vision_tower(model)
        part = getattr(tower, attr, None)
        if not isinstance(part, nn.Module):
            raise ValueError(f"the {self.name} vision tower ({type(tower).__name__}) has no {attr!r} module; "
                             f"update the registry (medvl/families.py)")
        return part

    def vision_blocks(self, model) -> nn.ModuleList:
        """The ViT blocks (what --train_vision lora adapts and --compile_vision compiles)."""
        return self._tower_part(model, self.blocks_attr)

    def merger(self, model) -> nn.Module:
        """The patch merger: vision features -> LLM embedding rows (what Stage 1 trains)."""
        return self._tower_part(model, self.merger_attr)

    def deepstack_mergers(self, model) -> list[nn.Module]:
        """The extra deepstack mergers (Qwen3-VL); empty for a family without them."""
        return list(self._tower_part(model, self.deepstack_attr)) if self.deepstack else []

    def spatial_merge_size(self, model) -> int:
        """Patches merged per side into one LLM image token (image tokens = patches / merge**2)."""
        tower = self.vision_tower(model)
        merge = getattr(tower, "spatial_merge_size", None) or getattr(tower.config, "spatial_merge_size", None)
        if not merge:
            raise ValueError(f"the {self.name} vision tower has no spatial_merge_size")
        return int(merge)

    # -- box text -------------------------------------------------------------------------------
    def format_box(self, xyxy, orig_size, input_size, label: str | None = None) -> str:
        """One box (pixels of the original image) as this family's text; see box_to_text."""
        return box_to_text(self, xyxy, orig_size, input_size, label)

    def join_boxes(self, parts: list[str]) -> str:
        """Several formatted boxes as one answer: Qwen2-VL's special-token boxes run on, JSON boxes form a list."""
        if self.box_format == "qwen2":
            return "".join(parts)
        return parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"

    def parse_boxes(self, text: str, orig_size, input_size) -> list[tuple[str | None, list[float]]]:
        """Boxes in a model's output, in pixels of the original image; see parse_boxes."""
        return parse_boxes(self, text, orig_size, input_size)


FAMILIES: dict[str, ModelFamily] = {
    "qwen2_vl": ModelFamily(
        name="qwen2_vl", label="Qwen2-VL", model_types=("qwen2_vl",),
        merger_regex=r"(^|\.)visual\.merger\.mlp\.(0|2)$",
        vision_regex=r"(^|\.)visual(\.|$)", box_format="qwen2"),
    "qwen2_5_vl": ModelFamily(
        name="qwen2_5_vl", label="Qwen2.5-VL", model_types=("qwen2_5_vl",),
        merger_regex=r"(^|\.)visual\.merger\.mlp\.(0|2)$",
        vision_regex=r"(^|\.)visual(\.|$)", box_format="json_abs"),
    "qwen3_vl": ModelFamily(
        name="qwen3_vl", label="Qwen3-VL", model_types=("qwen3_vl", "qwen3_vl_moe"),
        merger_regex=r"(^|\.)visual\.(merger|deepstack_merger_list\.\d+)\.linear_fc(1|2)$",
        vision_regex=r"(^|\.)visual(\.|$)", box_format="json_rel", default_system_prompt=None,
        merger_block_regex=r"(^|\.)visual\.(merger|deepstack_merger_list)(\.|$)",
        deepstack_attr="deepstack_merger_list"),
}


def get_family(name_or_config) -> ModelFamily:
    """A family by registry name, or detected from a config's model_type."""
    if isinstance(name_or_config, str):
        if name_or_config in FAMILIES:
            return FAMILIES[name_or_config]
        raise ValueError(f"unknown model family {name_or_config!r}; known: {sorted(FAMILIES)}")
    mt = getattr(name_or_config, "model_type", None)
    fam = _by_model_type(mt)
    if fam is None:
        raise ValueError(f"model_type {mt!r} is not a supported Qwen-VL family; known: "
                         f"{sorted(t for f in FAMILIES.values() for t in f.model_types)}")
    return fam


def _by_model_type(model_type) -> ModelFamily | None:
    return next((fam for fam in FAMILIES.values() if model_type in fam.model_types), None)


def family_of(model) -> ModelFamily | None:
    """The family of a loaded model (wrapped or not), or None for a model of no registered family (a text LLM)."""
    return _by_model_type(getattr(getattr(model, "config", None), "model_type", None))


def vision_tower(model) -> nn.Module | None:
    """The vision tower of a loaded model whose family is not at hand; None for a model of no registered family."""
    fam = family_of(model)
    return fam.vision_tower(model) if fam is not None else None


def resolve_modules(model, regex: str, what: str, linear_only: bool = True) -> list[str]:
    """Names of modules matching `regex` (re.search on the full name); a clear error when none match."""
    pat = re.compile(regex)
    names = [n for n, m in model.named_modules()
             if pat.search(n) and (not linear_only or isinstance(m, nn.Linear) or type(m).__name__.endswith("Linear"))]
    if not names:
        sample = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:8]
        raise ValueError(f"no module of the loaded model matches the {what} pattern {regex!r}. "
                         f"Module paths differ between transformers versions; linear layers look like: {sample}")
    return names


# ---------------------------------------------------------------- box text, both directions
def _rel(v: float, size: int, scale: int) -> int:
    return int(min(max(round(v / size * scale), 0), scale - 1))


def box_to_text(family: ModelFamily, xyxy, orig_size, input_size, label: str | None = None) -> str:
    """Box (pixels of the original image) -> the text the family reads and writes.

    orig_size / input_size: (w, h) of the original image and of the resized model input (Qwen2.5-VL's
    absolute coordinates live in the resized input)."""
    x1, y1, x2, y2 = xyxy
    w, h = orig_size
    if family.box_format == "qwen2":
        s = family.box_scale
        body = f"<|box_start|>({_rel(x1, w, s)},{_rel(y1, h, s)}),({_rel(x2, w, s)},{_rel(y2, h, s)})<|box_end|>"
        return (f"<|object_ref_start|>{label}<|object_ref_end|>" if label else "") + body
    if family.box_format == "json_abs":
        iw, ih = input_size
        coords = [round(x1 * iw / w), round(y1 * ih / h), round(x2 * iw / w), round(y2 * ih / h)]
    elif family.box_format == "json_rel":
        s = family.box_scale
        coords = [_rel(x1, w, s), _rel(y1, h, s), _rel(x2, w, s), _rel(y2, h, s)]
    else:
        raise ValueError(f"unknown box format {family.box_format!r}")
    obj = {"bbox_2d": coords}
    if label:
        obj["label"] = label
    return json.dumps(obj)


_QWEN2_BOX = re.compile(r"(?:<\|object_ref_start\|>(.*?)<\|object_ref_end\|>)?\s*<\|box_start\|>\s*\(\s*(-?\d+(?:\.\d+)?)\s*,"
                        r"\s*(-?\d+(?:\.\d+)?)\s*\)\s*,\s*\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)\s*<\|box_end\|>")
_BARE_QWEN2_BOX = re.compile(r"\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)\s*,\s*\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)")
_BBOX_2D = re.compile(r'"bbox_2d"\s*:\s*\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]'
                      r'(?:\s*,\s*"label"\s*:\s*"([^"]*)")?')


def parse_boxes(family: ModelFamily, text: str, orig_size, input_size) -> list[tuple[str | None, list[float]]]:
    """Boxes in a model's output, as (label, xyxy in pixels of the original image). Empty list if none.

    Qwen2-VL output without special tokens (decoded with skip_special_tokens) is still parsed as "(x1,y1),(x2,y2)"."""
    w, h = orig_size
    out: list[tuple[str | None, list[float]]] = []
    if family.box_format == "qwen2":
        s = family.box_scale
        hits = [(m.group(1), m.groups()[1:]) for m in _QWEN2_BOX.finditer(text)]
        if not hits:
            hits = [(None, m.groups()) for m in _BARE_QWEN2_BOX.finditer(text)]
        for label, c in hits:
            x1, y1, x2, y2 = map(float, c)
            out.append((label, [x1 / s * w, y1 / s * h, x2 / s * w, y2 / s * h]))
        return out
    for m in _BBOX_2D.finditer(text):
        x1, y1, x2, y2 = map(float, m.groups()[:4])
        if family.box_format == "json_abs":
            iw, ih = input_size
            box = [x1 * w / iw, y1 * h / ih, x2 * w / iw, y2 * h / ih]
        else:
            s = family.box_scale
            box = [x1 / s * w, y1 / s * h, x2 / s * w, y2 / s * h]
        out.append((m.group(5), box))
    return out
