"""Answer normalisation and yes/no extraction for the metrics: the project's one answer rule, medvl/answers.py.

Re-exported here so every metric module keeps importing from its own package; the rules (and their docstring)
live in medvl.answers only, shared with the converters that decide categories.
"""

from medvl.answers import NO_WORDS, YES_WORDS, normalize_answer, tokens, yes_no

__all__ = ["NO_WORDS", "YES_WORDS", "normalize_answer", "tokens", "yes_no"]
