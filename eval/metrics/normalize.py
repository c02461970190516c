"""Answer normalisation and yes/no extraction.

Why: the same answer is written many ways ("Yes.", "yes", "YES, there is"); exact-match style metrics
must compare meaning-preserving canonical forms, and every metric must use the *same* rules, so they
live here once.

Rules of `normalize_answer` (applied in this order):
  1. Unicode NFKC (full-width letters, ligatures and compatibility forms become plain characters).
  2. Lowercase.
  3. Apostrophes (' ’ ʼ ‘) are deleted, so "isn't" -> "isnt", "patient's" -> "patients".
  4. Every other punctuation character (ASCII `string.punctuation` and any Unicode category P*) becomes a
     space. A space, not a deletion (as SQuAD does), so "2.5 cm" -> "2 5 cm" never equals "25 cm" and
     "x-ray" -> "x ray".
  5. The articles "a", "an", "the" are removed as whole words (`keep_articles=True` keeps them).
  6. Whitespace is collapsed to single spaces and stripped.

Rules of `yes_no` (returns "yes", "no" or None = not a yes/no answer or ambiguous):
  * Tokens are those of `normalize_answer(answer, keep_articles=True)`.
  * The answer must *start* with a yes word (yes, yeah, yep, yup, true, correct) or a no word
    (no, nope, false, incorrect). "there is a fracture" without a leading yes/no word -> None: a free
    sentence is not mapped to yes/no by guessing.
  * A leading yes word is refused (None) when the rest of the answer contains a negation or a no word
    (no, not, never, none, nothing, neither, nor, cannot, nope, false, incorrect, or a "n't" contraction),
    e.g. "Yes, there is no fracture" is ambiguous.
  * A leading no word is refused (None) when the rest contains a yes word ("no, yes").
    A negation after "no" agrees with it ("No, it is not") and is kept as "no".
  * Words such as "right" or "positive" are NOT synonyms: "right" is a side in medical answers and
    "positive" can be a finding, so mapping them would be ambiguous.
"""

from __future__ import annotations

import re
import string
import unicodedata

_APOSTROPHES = "'\u2019\u02bc\u2018"
_ARTICLES = frozenset({"a", "an", "the"})
_WS = re.compile(r"\s+")

YES_WORDS = frozenset({"yes", "yeah", "yep", "yup", "true", "correct"})
NO_WORDS = frozenset({"no", "nope", "false", "incorrect"})
_NEGATIONS = frozenset({"no", "not", "never", "none", "nothing", "neither", "nor", "cannot"}) | NO_WORDS
# After apostrophe deletion "isn't" is "isnt": contractions of not end in "nt" and are listed explicitly
# (a bare "...nt" suffix would also hit "patient", "present").
_NT_CONTRACTIONS = frozenset({
    "isnt", "arent", "wasnt", "werent", "dont", "doesnt", "didnt", "hasnt", "havent", "hadnt",
    "cant", "couldnt", "wont", "wouldnt", "shouldnt", "mustnt", "neednt", "aint",
})


def _is_punct(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def normalize_answer(text: str, *, keep_articles: bool = False) -> str:
    """Canonical form of an answer (rules in the module docstring)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join("" if ch in _APOSTROPHES else (" " if _is_punct(ch) else ch) for ch in text)
    words = text.split()
    if not keep_articles:
        words = [w for w in words if w not in _ARTICLES]
    return " ".join(words)


def tokens(text: str, *, keep_articles: bool = False) -> list[str]:
    """Whitespace tokens of the normalised answer."""
    return normalize_answer(text, keep_articles=keep_articles).split()


def yes_no(answer: str) -> str | None:
    """Map an answer to "yes" / "no", or None when it is not an unambiguous yes/no answer."""
    toks = tokens(answer, keep_articles=True)
    if not toks:
        return None
    head, rest = toks[0], set(toks[1:])
    if head in YES_WORDS:
        if rest & (_NEGATIONS | _NT_CONTRACTIONS):
            return None
        return "yes"
    if head in NO_WORDS:
        if rest & YES_WORDS:
            return None
        return "no"
    return None
