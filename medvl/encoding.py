"""Record -> model inputs. The ONE encoding path used by validation, training and evaluation.

Same image resizing (min/max pixels of the image processor), same chat template, same image-token expansion
everywhere, so a sample that validates is a sample that trains and evaluates identically.
"""
from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvl.schema import IMAGE_TAG, REGION_TAG, image_list
from medvl.paths import FileTooLarge, OutsideRoot, check_file_size, resolve_inside
from medvl.families import ModelFamily, box_to_text

IGNORE_INDEX = -100
DEFAULT_SYSTEM = object()  # sentinel: let the model's chat template pick its default system turn


class SampleError(ValueError):
    """A record that cannot be encoded. `reason` is a short stable key for reports."""

    def __init__(self, sample_id: Any, reason: str, detail: str = ""):
        self.sample_id, self.reason, self.detail = sample_id, reason, detail
        super().__init__(f"sample {sample_id!r}: {reason}" + (f" ({detail})" if detail else ""))


def load_image(path: str | os.PathLike, sample_id: Any = None, max_image_pixels: int | None = None,
               max_image_bytes: int | None = None):
    """Open an image as RGB. Grayscale, 16-bit, CMYK, palette and alpha images are converted, not rejected.

    A file over max_image_bytes (default medvl.paths.MAX_IMAGE_BYTES) is rejected as image_file_too_large from its
    size, before it is opened.

    An image over max_image_pixels (default: PIL's MAX_IMAGE_PIXELS, the size PIL calls a possible decompression
    bomb) is rejected as image_too_large from its header, before any pixel is decoded. PIL itself only warns up
    to twice that size and decodes it: ~90 M pixels, a few hundred MB per image per worker."""
    from PIL import Image, UnidentifiedImageError

    limit = max_image_pixels or Image.MAX_IMAGE_PIXELS or 89_478_485
    p = Path(path)
    if not p.is_file():
        raise SampleError(sample_id, "missing_image", str(p))
    try:
        check_file_size(p, max_image_bytes)
    except FileTooLarge as e:
        raise SampleError(sample_id, e.reason, str(e)) from None
    try:
        with Image.open(p) as im:
            if im.width * im.height > limit:
                raise SampleError(sample_id, "image_too_large", f"{im.width}x{im.height} > {limit} pixels: {p}")
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                # 16/32-bit grayscale: rescale to 8 bits by the image's own range (a plain convert clips).
                arr = np.asarray(im, dtype=np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
                im = Image.fromarray(arr.astype(np.uint8), mode="L")
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGB", im.size, (0, 0, 0))
                bg.paste(im, mask=im.split()[-1])
                return bg
            return im.convert("RGB")
    except SampleError:
        raise
    except Image.DecompressionBombError as e:  # over twice PIL's limit: refused by PIL at open
        raise SampleError(sample_id, "image_too_large", f"{p}: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise SampleError(sample_id, "unreadable_image", f"{p}: {e}") from None


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


class VLProcessor:
    """Tokenizer + image processor + family: encodes schema records for training and generation."""

    def __init__(self, tokenizer, image_processor, family: ModelFamily, max_len: int = 2048,
                 system_prompt: Any = DEFAULT_SYSTEM, image_root: str | None = None, truncation: str = "reject",
                 allow_outside_root: bool = False, max_image_bytes: int | None = None):
        if truncation not in ("reject", "text_tail"):
            raise ValueError("truncation must be 'reject' or 'text_tail'")
        self.tokenizer, self.image_processor, self.family = tokenizer, image_processor, family
        self.max_len, self.system_prompt, self.image_root, self.truncation = max_len, system_prompt, image_root, truncation
        self.allow_outside_root, self.max_image_bytes = allow_outside_root, max_image_bytes
        self.image_token = "<|image_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.merge = int(getattr(image_processor, "merge_size", 2))
        self.patch = int(getattr(image_processor, "patch_size", 14))
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._assistant_header = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
        self._im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        # Record text is data, never markup: a special-token string in it ("<|im_end|>\n<|im_start|>assistant\n"
        # in a question) is fenced by _plain and tokenized as plain characters; only the template's tokens are live.
        # The fence is random and printable ASCII (json.dumps keeps it in box labels), so no record can forge it.
        self._fence = f"<medvl-plain-{uuid.uuid4().hex}>"
        specials = sorted({t.content for t in tokenizer.added_tokens_decoder.values() if t.special}, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, specials))) if specials else None

    # -- pieces ---------------------------------------------------------------------------------
    def _plain(self, text: str) -> str:
        """Text from a record (or the user's system prompt) with each special-token string fenced as plain text."""
        if self._special_re is None:
            return text
        return self._special_re.sub(lambda m: self._fence + m.group(0) + self._fence, text)

    def _tokenize(self, text: str, grid, sample_id) -> list[int]:
        """The rendered template -> ids: fenced pieces with special tokens split into ordinary tokens, the rest as
        the tokenizer reads it (image slots expanded there only). Without a fence: one call, as before."""
        pieces = text.split(self._fence)
        live = self._expand_image_tokens(self._fence.join(pieces[0::2]), grid, sample_id).split(self._fence)
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

    def process_images(self, rec: dict):
        images = [load_image(self.image_path(p, rec.get("id")), rec.get("id"), max_image_bytes=self.max_image_bytes)
                  for p in image_list(rec)]
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

    def box_text(self, box: dict, image_sizes, input_sizes, with_label: bool = True, sample_id: Any = None) -> str:
        """One meta box in this family's format (a box stored for another size of the image is rescaled to it)."""
        x1, y1, x2, y2 = box["xyxy"]
        w, h = image_sizes[0]
        bw, bh = box.get("image_size") or (w, h)
        if (bw, bh) != (w, h):
            x1, y1, x2, y2 = x1 * w / bw, y1 * h / bh, x2 * w / bw, y2 * h / bh
        # checked against the decoded image: a record's image_size may be absent or wrong (1 px: rounding)
        if not (-1 <= x1 < x2 <= w + 1 and -1 <= y1 < y2 <= h + 1):
            raise SampleError(sample_id, "box_outside_image", f"{box['xyxy']} on the {w}x{h} image")
        label = box.get("label") if with_label else None
        return box_to_text(self.family, [x1, y1, x2, y2], (w, h), input_sizes[0],
                           self._plain(label) if isinstance(label, str) else label)

    def answer_text(self, rec: dict, turn_value: str, image_sizes, input_sizes) -> str:
        """A grounding record's answer is its box, written in this family's format."""
        meta = rec.get("meta") or {}
        if meta.get("task") != "grounding":
            return turn_value
        boxes = meta.get("boxes") or []
        if not boxes or not image_sizes:
            raise SampleError(rec.get("id"), "grounding_without_box_or_image")
        parts = [self.box_text(b, image_sizes, input_sizes, sample_id=rec.get("id")) for b in boxes]
        return self.family.join_boxes(parts)

    def render_regions(self, rec: dict, image_sizes, input_sizes) -> list[str]:
        """Turn values with each `<region>` tag replaced by the next box of meta.boxes in this family's format:
        bare in a question (a label there would give away a region-classification answer), labelled in an answer."""
        conv = rec["conversations"]
        n_tags = sum(t["value"].count(REGION_TAG) for t in conv)
        if not n_tags:
            return [self._plain(t["value"]) for t in conv]
        boxes = (rec.get("meta") or {}).get("boxes") or []
        if n_tags != len(boxes):
            raise SampleError(rec.get("id"), "region_tag_mismatch", f"{n_tags} {REGION_TAG} tags for {len(boxes)} boxes")
        if not image_sizes:
            raise SampleError(rec.get("id"), "region_without_image")
        it = iter(boxes)
        out = []
        for turn in conv:
            pieces = turn["value"].split(REGION_TAG)
            text = self._plain(pieces[0])
            for rest in pieces[1:]:
                text += self.box_text(next(it), image_sizes, input_sizes, with_label=turn["from"] == "gpt",
                                      sample_id=rec.get("id")) + self._plain(rest)
            out.append(text)
        return out

    def messages(self, rec: dict, include_answer: bool, image_sizes=(), input_sizes=()) -> list[dict]:
        values = self.render_regions(rec, image_sizes, input_sizes)
        conv = rec["conversations"]
        if not include_answer:
            conv = conv[:-1] if conv and conv[-1].get("from") == "gpt" else conv
        msgs = []
        if self.system_prompt is not DEFAULT_SYSTEM and self.system_prompt is not None:
            msgs.append({"role": "system", "content": [{"type": "text", "text": self._plain(self.system_prompt)}]})
        for i, turn in enumerate(conv):
            if turn["from"] == "human":
                content = []
                chunks = values[i].split(IMAGE_TAG)
                for j, chunk in enumerate(chunks):
                    if j > 0:
                        content.append({"type": "image"})
                        chunk = chunk[1:] if chunk.startswith("\n") else chunk
                    if chunk.strip():
                        content.append({"type": "text", "text": chunk.strip()})
                msgs.append({"role": "user", "content": content})
            else:
                last = i == len(rec["conversations"]) - 1
                text = self.answer_text(rec, values[i], image_sizes, input_sizes) if last else values[i]
                msgs.append({"role": "assistant", "content": [{"type": "text", "text": text}]})
        return msgs

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
            self.answer_text(rec, "", sizes, input_sizes)
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


def mm_token_type_ids(input_ids, image_token_id: int):
    """transformers 5.x needs the modality of each token (1 = image) whenever image_grid_thw is passed."""
    return (input_ids == image_token_id).long()
