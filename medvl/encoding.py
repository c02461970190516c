"""Record -> model inputs (token ids, labels, pixels). The ONE encoding path used by validation, training and evaluation.

Same image resizing (min/max pixels of the image processor), same chat template, same image-token expansion
everywhere, so a sample that validates is a sample that trains and evaluates identically. The chat messages come
from medvl/prompt.py (boxes in the family's format), images from medvl/images.py; this module tokenizes.

IGNORE_INDEX, DEFAULT_SYSTEM, SampleError, Encoded (medvl/samples.py) and load_image (medvl/images.py) are
re-exported: the rest of the repository imports them from here.
"""
from __future__ import annotations

import os
from typing import Any

from medvl.families import ModelFamily
from medvl.images import load_image
from medvl.paths import OutsideRoot, resolve_inside
from medvl.prompt import PlainText, PromptBuilder
from medvl.samples import DEFAULT_SYSTEM, IGNORE_INDEX, Encoded, SampleError
from medvl.schema import image_list

__all__ = ["DEFAULT_SYSTEM", "IGNORE_INDEX", "Encoded", "SampleError", "VLProcessor", "load_image"]


class VLProcessor:
    """Tokenizer + image processor + family: encodes schema records for training and generation."""

    def __init__(self, tokenizer, image_processor, family: ModelFamily, max_len: int = 2048,
                 system_prompt: Any = DEFAULT_SYSTEM, image_root: str | None = None, truncation: str = "reject",
                 allow_outside_root: bool = False, max_image_bytes: int | None = None):
        if truncation not in ("reject", "text_tail"):
            raise ValueError("truncation must be 'reject' or 'text_tail'")
        self.tokenizer, self.image_processor, self.family = tokenizer, image_processor, family
        self.max_len, self.image_root, self.truncation = max_len, image_root, truncation
        self.allow_outside_root, self.max_image_bytes = allow_outside_root, max_image_bytes
        self.image_token = "<|image_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.merge = int(getattr(image_processor, "merge_size", 2))
        self.patch = int(getattr(image_processor, "patch_size", 14))
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._assistant_header = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
        self._im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self._plain = PlainText(tokenizer)  # record text is data: see medvl/prompt.py
        self.prompt = PromptBuilder(family, self._plain, system_prompt)

    @property
    def system_prompt(self):
        return self.prompt.system_prompt

    def messages(self, rec: dict, include_answer: bool, image_sizes=(), input_sizes=()) -> list[dict]:
        """The chat messages of a record (medvl/prompt.py), before the template renders them."""
        return self.prompt.messages(rec, include_answer, image_sizes, input_sizes)

    # -- pieces ---------------------------------------------------------------------------------
    def _tokenize(self, text: str, grid, sample_id) -> list[int]:
        """The rendered template -> ids: fenced pieces with special tokens split into ordinary tokens, the rest as
        the tokenizer reads it (image slots expanded there only). Without a fence: one call, as before."""
        fence = self._plain.fence
        pieces = text.split(fence)
        live = self._expand_image_tokens(fence.join(pieces[0::2]), grid, sample_id).split(fence)
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            plain = i % 2 == 1
            ids += self.tokenizer(piece if plain else live[i // 2], add_special_tokens=False,
                                  split_special_tokens=plain)["input_ids"]
        return ids

    def image_path(self, p: str, sample_id: Any = None) -> str:
        """A relative path is joined to image_root and must stay under it (`../../x` is refused unless
        allow_outside_root): a record must not make training read arbitrary files. Absolute paths are taken as
        written (converters write them resolved, after the same check: medvl.paths)."""
        if os.path.isabs(p) or not self.image_root:
            return p
        try:  # resolved, symlinks followed: a link under the root that points elsewhere is outside
            return str(resolve_inside(self.image_root, p, self.allow_outside_root))
        except OutsideRoot as e:
            raise SampleError(sample_id, e.reason, str(e)) from None

    def load_images(self, rec: dict) -> list:
        """The record's images, decoded as training reads them (path checks, size gate, RGB)."""
        return [load_image(self.image_path(p, rec.get("id")), rec.get("id"), max_image_bytes=self.max_image_bytes)
                for p in image_list(rec)]

    def process_images(self, rec: dict, images: list | None = None):
        """(pixel_values, grid, original sizes, model-input sizes) of the record's images (`images`: already
        loaded by load_images)."""
        images = self.load_images(rec) if images is None else images
        if not images:
            return None, None, [], []
        try:
            out = self.image_processor(images=images, return_tensors="pt")
        except Exception as e:  # a library error on one image must name the sample
            raise SampleError(rec.get("id"), "image_processing_failed", f"{type(e).__name__}: {e}") from None
        grid = out["image_grid_thw"]
        sizes = [im.size for im in images]
        input_sizes = [(int(g[2]) * self.patch, int(g[1]) * self.patch) for g in grid]
        return out["pixel_values"], grid, sizes, input_sizes

    def _expand_image_tokens(self, text: str, grid, sample_id) -> str:
        n_slots = text.count(self.image_token)
        n_imgs = 0 if grid is None else len(grid)
        if n_slots != n_imgs:
            raise SampleError(sample_id, "image_tag_mismatch", f"{n_slots} image slots in the prompt for {n_imgs} images")
        if not n_imgs:
            return text
        pieces = text.split(self.image_token)
        out = [pieces[0]]
        for g, rest in zip(grid, pieces[1:]):
            out.append(self.image_token * (int(g.prod()) // (self.merge ** 2)))
            out.append(rest)
        return "".join(out)

    def _labels(self, ids: list[int]) -> list[int]:
        """Labels on assistant contents (and their <|im_end|>) only."""
        labels = [IGNORE_INDEX] * len(ids)
        h, n = self._assistant_header, len(self._assistant_header)
        i = 0
        while i <= len(ids) - n:
            if ids[i:i + n] == h:
                j = i + n
                while j < len(ids) and ids[j] != self._im_end:
                    labels[j] = ids[j]
                    j += 1
                if j < len(ids):
                    labels[j] = ids[j]
                i = j + 1
            else:
                i += 1
        return labels

    # -- the entry points -----------------------------------------------------------------------
    def encode(self, rec: dict, train: bool = True) -> Encoded:
        """Encode a record: with its answer and labels (train=True), or as a generation prompt."""
        sid = rec.get("id")
        conv = rec.get("conversations") or []
        if train and (not conv or conv[-1].get("from") != "gpt" or not str(conv[-1].get("value", "")).strip()):
            raise SampleError(sid, "empty_answer")
        pixel_values, grid, sizes, input_sizes = self.process_images(rec)
        if not train and (rec.get("meta") or {}).get("task") == "grounding":
            # a prompt leaves the answer out, but its reference box will be scored: checked as training checks it
            self.prompt.answer_text(rec, "", sizes, input_sizes)
        msgs = self.messages(rec, include_answer=train, image_sizes=sizes, input_sizes=input_sizes)
        try:
            text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=not train)
        except Exception as e:
            raise SampleError(sid, "chat_template_failed", f"{type(e).__name__}: {e}") from None
        ids = self._tokenize(text, grid, sid)
        n_img_tokens = sum(int(g.prod()) // self.merge ** 2 for g in grid) if grid is not None else 0
        if sum(1 for t in ids if t == self.image_token_id) != n_img_tokens:
            raise SampleError(sid, "image_token_count_mismatch")
        labels = self._labels(ids) if train else None
        if len(ids) > self.max_len:
            ids, labels = self._truncate(sid, ids, labels)
        if train and all(l == IGNORE_INDEX for l in labels):
            raise SampleError(sid, "no_answer_tokens")
        return Encoded(ids, labels, pixel_values, grid, sizes, input_sizes)

    def _truncate(self, sid, ids, labels):
        """Over-length: rejected, or (text_tail) cut after the last image token while answer tokens remain."""
        detail = f"{len(ids)} tokens > max_len {self.max_len}"
        if self.truncation == "reject":
            raise SampleError(sid, "over_length", detail)
        last_img = max((i for i, t in enumerate(ids) if t == self.image_token_id), default=-1)
        if last_img >= self.max_len:
            raise SampleError(sid, "over_length", detail + "; cutting would split image tokens")
        ids = ids[: self.max_len]
        labels = labels[: self.max_len] if labels is not None else None
        return ids, labels
