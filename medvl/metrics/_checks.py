"""Input validation shared by the metric modules.

Why: metrics are pure functions over parallel lists; a length mismatch or a non-string answer silently
misaligns every later sample. Bad input gets a clear error naming the sample index and the reason.
"""

from __future__ import annotations

from typing import Sequence


def check_pairs(preds: Sequence[str], refs: Sequence, *, allow_empty_ref: bool = False, multi: bool = False) -> None:
    """Raise if `preds`/`refs` are not equally long lists of strings.

    `multi`: a reference may also be a non-empty list of strings (the accepted answers, references.py).
    An empty (or whitespace-only) reference is refused unless `allow_empty_ref`: a sample without a
    reference answer cannot be scored, and scoring it would inflate or deflate the mean silently.
    Empty predictions are allowed everywhere (a model may answer nothing; that answer is scored as wrong).
    """
    if isinstance(preds, str) or isinstance(refs, str):
        raise TypeError("preds and refs must be lists of strings, not a single string")
    if len(preds) != len(refs):
        raise ValueError(f"preds and refs differ in length: {len(preds)} predictions vs {len(refs)} references")
    for i, (p, r) in enumerate(zip(preds, refs)):
        if not isinstance(p, str):
            raise TypeError(f"sample {i}: prediction is {type(p).__name__}, expected str")
        forms = r if multi and isinstance(r, (list, tuple)) else [r]
        if not forms:
            raise ValueError(f"sample {i}: empty list of reference answers; fix the data")
        for f in forms:
            if not isinstance(f, str):
                raise TypeError(f"sample {i}: reference is {type(f).__name__}, expected str"
                                + (" or a list of str" if multi else ""))
            if not allow_empty_ref and not f.strip():
                raise ValueError(f"sample {i}: reference answer is empty; fix the data (a sample without a reference "
                                 "cannot be scored)")
