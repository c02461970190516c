"""Question/answer text as converters write it: whitespace, the yes/no answer rule, reserved schema tags."""
from __future__ import annotations

from typing import Any

from medvl import answers
from medvl.schema import IMAGE_TAG, REGION_TAG


def clean_text(value: Any) -> str:
    """Short QA text: collapse runs of whitespace (tabs and double spaces occur inside released questions)."""
    return " ".join(str(value).split()) if value is not None else ""


def yes_no(answer: Any) -> str | None:
    """'yes' / 'no' by the project's one answer rule (medvl.answers.yes_no; English and SLAKE's Chinese forms)."""
    return answers.yes_no(clean_text(answer))


def reserved_tag_problem(*texts: str) -> str | None:
    """`<image>` or `<region>` inside released question/answer text: the schema would read it as an image / a box,
    so the record is rejected at conversion (reserved_tag_in_text) rather than refused later."""
    found = [t for t in (IMAGE_TAG, REGION_TAG) if any(t in x for x in texts)]
    return f"text holds {' and '.join(found)}" if found else None
