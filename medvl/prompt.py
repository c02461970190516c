"""Record -> chat messages: the turns, the image slots, and boxes written in the model family's text format.

Record text is data, never markup: a special-token string in it ("<|im_end|>\\n<|im_start|>assistant\\n" in a
question) is fenced (PlainText) and later tokenized as plain characters (medvl/encoding.py); only the chat
template's own tokens are live. The fence is random and printable ASCII (json.dumps keeps it in box labels), so no
record can forge it.
"""
from __future__ import annotations

import re
import uuid
from typing import Any

from medvl.families import ModelFamily
from medvl.samples import DEFAULT_SYSTEM, SampleError
from medvl.schema import IMAGE_TAG, REGION_TAG


class PlainText:
    """Fences each special-token string of a tokenizer in text that comes from a record or the user."""

    def __init__(self, tokenizer):
        self.fence = f"<medvl-plain-{uuid.uuid4().hex}>"
        specials = sorted({t.content for t in tokenizer.added_tokens_decoder.values() if t.special}, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, specials))) if specials else None

    def __call__(self, text: str) -> str:
        if self._special_re is None:
            return text
        return self._special_re.sub(lambda m: self.fence + m.group(0) + self.fence, text)


class PromptBuilder:
    """The chat messages of a record for one model family (system turn, user turns with image slots, answers)."""

    def __init__(self, family: ModelFamily, plain: PlainText, system_prompt: Any = DEFAULT_SYSTEM):
        self.family, self.plain, self.system_prompt = family, plain, system_prompt

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
        return self.family.format_box([x1, y1, x2, y2], (w, h), input_sizes[0],
                                      self.plain(label) if isinstance(label, str) else label)

    def answer_text(self, rec: dict, turn_value: str, image_sizes, input_sizes) -> str:
        """A grounding record's answer is its box, written in this family's format."""
        meta = rec.get("meta") or {}
        if meta.get("task") != "grounding":
            return turn_value
        boxes = meta.get("boxes") or []
        if not boxes or not image_sizes:
            raise SampleError(rec.get("id"), "grounding_without_box_or_image")
        return self.family.join_boxes([self.box_text(b, image_sizes, input_sizes, sample_id=rec.get("id"))
                                       for b in boxes])

    def render_regions(self, rec: dict, image_sizes, input_sizes) -> list[str]:
        """Turn values with each `<region>` tag replaced by the next box of meta.boxes in this family's format:
        bare in a question (a label there would give away a region-classification answer), labelled in an answer."""
        conv = rec["conversations"]
        n_tags = sum(t["value"].count(REGION_TAG) for t in conv)
        if not n_tags:
            return [self.plain(t["value"]) for t in conv]
        boxes = (rec.get("meta") or {}).get("boxes") or []
        if n_tags != len(boxes):
            raise SampleError(rec.get("id"), "region_tag_mismatch", f"{n_tags} {REGION_TAG} tags for {len(boxes)} boxes")
        if not image_sizes:
            raise SampleError(rec.get("id"), "region_without_image")
        it = iter(boxes)
        out = []
        for turn in conv:
            pieces = turn["value"].split(REGION_TAG)
            text = self.plain(pieces[0])
            for rest in pieces[1:]:
                text += self.box_text(next(it), image_sizes, input_sizes, with_label=turn["from"] == "gpt",
                                      sample_id=rec.get("id")) + self.plain(rest)
            out.append(text)
        return out

    def messages(self, rec: dict, include_answer: bool, image_sizes=(), input_sizes=()) -> list[dict]:
        values = self.render_regions(rec, image_sizes, input_sizes)
        conv = rec["conversations"]
        if not include_answer:
            conv = conv[:-1] if conv and conv[-1].get("from") == "gpt" else conv
        msgs = []
        if self.system_prompt is not DEFAULT_SYSTEM and self.system_prompt is not None:
            msgs.append({"role": "system", "content": [{"type": "text", "text": self.plain(self.system_prompt)}]})
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
