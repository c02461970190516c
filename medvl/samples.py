"""What an encoded sample is, and how a record fails to become one: shared by encoding, collation and packing."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IGNORE_INDEX = -100
DEFAULT_SYSTEM = object()  # sentinel: let the model's chat template pick its default system turn


class SampleError(ValueError):
    """A record that cannot be encoded. `reason` is a short stable key for reports."""

    def __init__(self, sample_id: Any, reason: str, detail: str = ""):
        self.sample_id, self.reason, self.detail = sample_id, reason, detail
        super().__init__(f"sample {sample_id!r}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int] | None
    pixel_values: Any = None            # torch.Tensor (num_patches, patch_dim) or None
    image_grid_thw: Any = None          # torch.Tensor (num_images, 3) or None
    image_sizes: list = field(default_factory=list)   # original (w, h) per image
    input_sizes: list = field(default_factory=list)   # resized model input (w, h) per image
    key: str | None = None              # the record id (set by the training dataset; keys the vision cache)
    skipped: dict = field(default_factory=dict)  # {id: reason} of records the dataset skipped to reach this one

    def __len__(self):
        return len(self.input_ids)
