"""Cache of the frozen vision tower's outputs, across epochs.

In Stage 2 neither the ViT nor the merger trains, so an image's features (merger output, one row per LLM image
token) are the same every time the sample comes back. The ViT is a large share of the FLOPs at 2B (~40%); from the
second epoch on it is skipped. Features are kept in host memory (bounded; beyond the bound images are recomputed and
counted, never dropped) and copied to the GPU per step.

Keyed by the sample's record id and the image's index in it: within one run an id always encodes the same image at
the same resolution. A deepstack family (Qwen3-VL) is not supported: its merged features feed several LLM layers,
so the merger output alone does not stand for the image (family.supports_vision_cache).
"""
from __future__ import annotations

import torch

from medvl.families import ModelFamily
from train.adapters import component_of


class VisionFeatureCache:
    def __init__(self, family: ModelFamily, max_gib: float = 16.0, device: str = "cpu"):
        if not family.supports_vision_cache:
            raise ValueError(f"--vision_cache does not support {family.label} (deepstack features feed several LLM "
                             f"layers); train it without --vision_cache")
        self.family = family
        self.max_bytes, self.device = int(max_gib * 2 ** 30), device
        self.store: dict[str, torch.Tensor] = {}
        self.bytes = 0
        self.stats = {"hits": 0, "misses": 0, "not_stored_full": 0}

    def check_frozen(self, model) -> None:
        trainable = [n for n, p in model.named_parameters()
                     if p.requires_grad and component_of(n, self.family) in ("vision", "merger")]
        if trainable:
            raise ValueError(f"--vision_cache needs a frozen vision tower and merger, but {len(trainable)} of their "
                             f"parameters train (e.g. {trainable[0]}); it is for Stage 2")

    def _features(self, inner, pixel_values, grid_thw) -> list[torch.Tensor]:
        with torch.no_grad():
            out = inner.get_image_features(pixel_values, grid_thw)
        feats = getattr(out, "pooler_output", out)  # transformers 5.x returns an output object, older a tuple
        if isinstance(feats, torch.Tensor):
            merge = self.family.spatial_merge_size(inner)
            feats = torch.split(feats, (grid_thw.prod(-1) // merge ** 2).tolist())
        return list(feats)

    def image_features(self, inner, pixel_values, grid_thw, keys: list[str]) -> torch.Tensor:
        """All images' features in batch order, computing only the ones not cached."""
        rows = torch.split(pixel_values, grid_thw.prod(-1).tolist())
        miss = [i for i, k in enumerate(keys) if k not in self.store]
        computed = {}
        if miss:
            feats = self._features(inner, torch.cat([rows[i] for i in miss]), grid_thw[miss])
            for i, f in zip(miss, feats):
                computed[i] = f
                nbytes = f.numel() * f.element_size()
                if self.bytes + nbytes <= self.max_bytes:
                    self.store[keys[i]] = f.detach().to(self.device, non_blocking=True)
                    self.bytes += nbytes
                else:
                    self.stats["not_stored_full"] += 1
        self.stats["hits"] += len(keys) - len(miss)
        self.stats["misses"] += len(miss)
        dev = pixel_values.device
        return torch.cat([computed[i] if i in computed else self.store[k].to(dev, non_blocking=True)
                          for i, k in enumerate(keys)])

    def embed(self, inner, inputs: dict) -> dict:
        """Replace input_ids + pixel_values by inputs_embeds with the (cached) image features in place."""
        inputs = dict(inputs)
        ids, keys = inputs.pop("input_ids"), inputs.pop("image_keys")
        pv, thw = inputs.pop("pixel_values"), inputs.pop("image_grid_thw")
        inputs.pop("mm_token_type_ids", None)
        feats = self.image_features(inner, pv, thw, keys)
        embeds = inner.get_input_embeddings()(ids)
        mask = (ids == inner.config.image_token_id).unsqueeze(-1)
        if int(mask.sum()) != feats.shape[0]:
            raise ValueError(f"image tokens ({int(mask.sum())}) != cached image features ({feats.shape[0]}) "
                             f"for images {keys}")
        inputs["inputs_embeds"] = embeds.masked_scatter(mask.expand_as(embeds), feats.to(embeds.dtype))
        return inputs

    def summary(self) -> dict:
        return dict(self.stats, images=len(self.store), gib=round(self.bytes / 2 ** 30, 3))
