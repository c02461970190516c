"""The one answer rule: normalisation, the yes/no decision and "is a choice answer", shared by the converters
(which decide categories), training validation and the metrics (which score answers).

Why one module: when the converter and the metrics read "Yes, there is a fracture." differently, the category a
question lands in and the score it gets follow two rules, and neither says so.

`normalize_answer` (in this order):
  1. Unicode NFKC (full-width letters, ligatures such as "ﬁ" and compatibility forms become plain characters).
  2. Lowercase.
  3. Apostrophes (' ’ ʼ ‘) are deleted, so "isn't" -> "isnt", "patient's" -> "patients".
  4. Every other punctuation character (ASCII `string.punctuation` and any Unicode category P*) becomes a
     space. A space, not a deletion, so "2.5 cm" -> "2 5 cm" never equals "25 cm" and "x-ray" -> "x ray".
  5. The articles "a", "an", "the" are removed as whole words (`keep_articles=True` keeps them).
  6. Whitespace is collapsed to single spaces and stripped.

`yes_no` returns "yes", "no" or None (not a yes/no answer, or ambiguous). An answer counts as yes/no when:
  * Chinese (SLAKE): the whole answer, punctuation removed, is one of CJK_YES (是, 是的, 对, 有, 存在, 包含, 包括)
    or CJK_NO (否, 不是, 不, 没有, 无, 不存在, 不包含, 不包括). "都是" ("both are") is a choice answer, not yes.
  * English: it starts (after spaces and opening quotes/brackets) with a whole yes word (yes, yeah, yep, yup,
    true, correct) or no word (no, nope, false, incorrect), and then either ends or goes on after a space, sentence
    punctuation (, . ; : ! ?) or a closing quote/bracket with plain text: letters, digits, spaces and
    , . ; : ! ? ' " ( ) -.
    Anything else after the word means it is not a yes/no answer: "no/xq zzk", "yes/no", "no-contrast",
    "yes<|im_end|>", "no_x" -> None. The rule judges the form of the continuation, not its vocabulary:
    "no xq zzk" (letters only) still reads as "no", because an unknown term cannot be told from noise.
  * Not contradicted: a leading yes word followed by a negation (no, not, never, none, nothing, neither, nor,
    cannot, a no word, a "n't" contraction) -> None ("Yes, there is no fracture"); a leading no word followed
    by a yes word -> None ("yes no" is refused the same way, "no, yes" too). A negation after "no" agrees:
    "No, it is not" -> "no".
  * "right" and "positive" are not yes: "right" is a side in medical answers and "positive" can be a finding.
    One-letter "y"/"n" are not yes/no either (no test set uses them; "N" is also a nodal stage).

`is_choice_answer(question, answer)`: the question offers options (contains the word "or") and the normalised
answer occurs in the normalised question on word boundaries.
"""
from __future__ import annotations

import re
import string
import unicodedata

_APOSTROPHES = "'\u2019\u02bc\u2018"
_ARTICLES = frozenset({"a", "an", "the"})

YES_WORDS = frozenset({"yes", "yeah", "yep", "yup", "true", "correct"})
NO_WORDS = frozenset({"no", "nope", "false", "incorrect"})
CJK_YES = frozenset({"是", "是的", "对", "有", "存在", "包含", "包括"})
CJK_NO = frozenset({"否", "不是", "不", "没有", "无", "不存在", "不包含", "不包括"})
_NEGATIONS = frozenset({"no", "not", "never", "none", "nothing", "neither", "nor", "cannot"}) | NO_WORDS
# After apostrophe deletion "isn't" is "isnt": contractions of not are listed (a bare "...nt" suffix would also
# hit "patient", "present").
_NT_CONTRACTIONS = frozenset({
    "isnt", "arent", "wasnt", "werent", "dont", "doesnt", "didnt", "hasnt", "havent", "hadnt",
    "cant", "couldnt", "wont", "wouldnt", "shouldnt", "mustnt", "neednt", "aint",
})
_HEAD = re.compile(r"[^\W\d_]+")  # the first word: a run of letters ("yesterday" is one word, not "yes")
_SEPARATORS = ",.;:!?)\"'\u201d\u2019"  # what may follow the yes/no word directly
_PLAIN = set(_SEPARATORS + "(-\u201c\u2018")
_OPENERS = " \t\r\n\"'(\u201c\u2018"


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


def _plain_continuation(rest: str) -> bool:
    """The text after the yes/no word: empty, or a space/sentence punctuation, then plain text only."""
    if not rest:
        return True
    if not (rest[0].isspace() or rest[0] in _SEPARATORS):
        return False
    return all(ch.isalnum() or ch.isspace() or ch in _PLAIN for ch in rest)


def yes_no(answer: str) -> str | None:
    """"yes" / "no" when the answer is an unambiguous yes/no answer (module docstring), else None."""
    text = unicodedata.normalize("NFKC", str(answer)).lower().lstrip(_OPENERS)
    flat = normalize_answer(text).replace(" ", "")
    if flat in CJK_YES:
        return "yes"
    if flat in CJK_NO:
        return "no"
    m = _HEAD.match(text)
    if m is None or m.group() not in YES_WORDS | NO_WORDS or not _plain_continuation(text[m.end():]):
        return None
    rest = set(tokens(text[m.end():], keep_articles=True))
    if m.group() in YES_WORDS:
        return None if rest & (_NEGATIONS | _NT_CONTRACTIONS) else "yes"
    return None if rest & YES_WORDS else "no"


def is_choice_answer(question: str, answer: str) -> bool:
    """The question offers options ("... X or Y?") and the answer is one of the question's words."""
    q, a = normalize_answer(question), normalize_answer(answer)
    return bool(a) and " or " in f" {q} " and f" {a} " in f" {q} "


def infer_answer_type(question: str, answer: str, choice_is_closed: bool = True) -> str:
    """"closed" for a yes/no answer or (when `choice_is_closed`) a choice answer, else "open"."""
    if yes_no(answer) is not None or (choice_is_closed and is_choice_answer(question, answer)):
        return "closed"
    return "open"
