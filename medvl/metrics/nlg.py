"""Generation metrics through their reference implementations: ROUGE (rouge-score), BLEU / METEOR / CIDEr
(pycocoevalcap).

Why wrappers and not re-implementations: published numbers come from these libraries; we only feed them
well-formed input, keep their per-sample scores, and turn every backend failure into `MetricUnavailable`
instead of a number.

Tokenisation, stated per metric because scores depend on it:
  * ROUGE-1 / ROUGE-L: rouge-score with `UnicodeTokenizer` (below), not its default tokenizer, which deletes
    every non-ASCII letter (an identical Chinese answer scored 0, "ﬁbrosis" vs "fibrosis" 0). Text is NFKC
    normalised and lowercased; each CJK ideograph is one token (CJK is written without spaces); every other run
    of letters/digits is a token. ASCII runs go through rouge-score's own tokenizer and Porter stemmer (tokens
    longer than 3 characters), so plain English scores exactly as with the default tokenizer; non-ASCII words
    are not stemmed. F-measure per sample; the corpus score is the mean.
  * BLEU-1..4, METEOR, CIDEr: Stanford PTBTokenizer as pycocoevalcap runs it (Java; lowercases, then
    removes the punctuation tokens listed in pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS), on
    predictions and references together in one JVM call. The METEOR jar then applies its own `-norm`.

BLEU caveat: BLEU-4 of a correct one-word answer is meaningless (pycocoevalcap gives ~3e-5 per sample; nltk's
sentence BLEU with smoothing method1 gives 0.1778). Report BLEU for open-ended answers only: these functions do not
know answer types, so the caller selects open-ended samples (the registry's applies_to "open", eval/text_scoring.py).

Empty predictions (decided after testing pycocoevalcap 1.2): they are passed through as empty strings.
Bleu, Cider and the METEOR jar all score an empty hypothesis 0 without error, and an empty hypothesis
correctly contributes length 0 to BLEU's corpus brevity penalty. A placeholder token was rejected because it
adds a fake hypothesis word: on a 3-sample corpus with one empty prediction it raised corpus BLEU-4 from
0.247 to 0.307. What does break pycocoevalcap is a line break inside a string (PTBTokenizer runs with
-preserveLines, so "a\\rb" silently shifts every later sample onto the wrong reference): `_sanitize` replaces line
breaks with spaces, and a sentinel line checks the tokenizer's output is aligned. A "|" is passed through untouched
(scores equal unmodified pycocoevalcap): only the sequence "|||" is METEOR's field separator, and PTBTokenizer
splits it into "| | |", so tokenized text never holds it. `coco_from_tokens` also accepts text tokenized
elsewhere; METEOR refuses (MetricUnavailable naming the sample) any text that still holds "|||" rather than let
the jar read it as an extra reference. Empty references are refused (ValueError) before anything runs.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Iterable, Sequence

from medvl.metrics._checks import check_pairs
from medvl.metrics.errors import MetricUnavailable
from medvl.metrics.meteor import MeteorSession, require_java
from medvl.metrics.references import Refs, flatten, ref_lists

COCO_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "cider")
_SENTINEL = "alignment sentinel"  # PTB-tokenizes to itself; must come back as the last line


# --------------------------------------------------------------------------- ROUGE (rouge-score)

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_PIECE = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")  # one CJK ideograph, or a run of other letters/digits


class UnicodeTokenizer:
    """rouge-score tokenizer that keeps non-ASCII letters (rules in the module docstring)."""

    def __init__(self):
        from rouge_score import tokenizers

        self._ascii = tokenizers.DefaultTokenizer(use_stemmer=True)

    def tokenize(self, text: str) -> list[str]:
        out: list[str] = []
        for piece in _PIECE.findall(unicodedata.normalize("NFKC", text).lower()):
            out += self._ascii.tokenize(piece) if piece.isascii() else [piece]
        return out


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], tokenizer=UnicodeTokenizer())


def _rouge(preds, refs, key):
    check_pairs(preds, refs)
    scorer = _rouge_scorer()
    # rouge-score's signature is score(target, prediction): reference first.
    return [float(scorer.score(r, p)[key].fmeasure) for p, r in zip(preds, refs)]


def rouge_l(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Per-sample ROUGE-L F-measure (rouge-score, `UnicodeTokenizer`: Porter stemmer on ASCII words)."""
    return _rouge(preds, refs, "rougeL")


def rouge_1(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Per-sample ROUGE-1 F-measure (rouge-score, `UnicodeTokenizer`: Porter stemmer on ASCII words)."""
    return _rouge(preds, refs, "rouge1")


# --------------------------------------------------------------------------- pycocoevalcap

def _sanitize(text: str) -> str:
    """One line per answer for PTBTokenizer's -preserveLines protocol (see module docstring)."""
    return " ".join(text.splitlines())


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """PTB-tokenize strings exactly as pycocoevalcap does (one JVM call), with an alignment check.

    pycocoevalcap's tokenizer ignores the Java exit status and zips its output lines with the inputs, so a
    failing JVM would yield silently truncated or empty results; the sentinel line appended here must come
    back as the last output or `MetricUnavailable` is raised.
    """
    require_java("ptb_tokenizer")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    lines = [_sanitize(t) for t in texts] + [_SENTINEL]
    try:
        out = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(lines)})
    except OSError as e:  # java vanished, jar unreadable, package dir not writable (it writes a temp file there)
        raise MetricUnavailable("ptb_tokenizer", f"PTBTokenizer could not run: {e!r}") from e
    if len(out) != len(lines) or out.get(len(lines) - 1) != [_SENTINEL]:
        raise MetricUnavailable("ptb_tokenizer", f"PTBTokenizer (Java) returned {len(out)} of {len(lines)} lines or "
                                                 "lost the alignment sentinel: the JVM or the Stanford jar failed "
                                                 "(see its stderr above)")
    return [out[i][0] for i in range(len(texts))]


def _run_meteor(gts: dict, res: dict) -> tuple[float, list[float]]:
    """Run the METEOR jar once in its own process, always stopped afterwards (medvl.metrics.meteor)."""
    with MeteorSession() as session:
        return session.meteor(gts, res)


def coco_tokenize_pairs(preds: Sequence[str], refs: Refs) -> tuple[dict, dict]:
    """Validate and PTB-tokenize predictions and references in one JVM call.

    A reference may be a list of accepted answers (references.py): all of them go into the sample's list, the
    multi-reference input pycocoevalcap's scorers take. Returns (gts, res) = ({i: [ref tokens, ...]},
    {i: [pred tokens]}).
    """
    lists = ref_lists(preds, refs)
    if not preds:
        raise ValueError("no samples to score")
    _, flat_refs, owner = flatten(preds, lists)
    toks = ptb_tokenize(list(preds) + flat_refs)
    n = len(preds)
    res = {i: [toks[i]] for i in range(n)}
    gts: dict = {i: [] for i in range(n)}
    for k, i in enumerate(owner):
        if not toks[n + k].strip():
            raise ValueError(f"sample {i}: reference {flat_refs[k]!r} is empty after PTB tokenization "
                             "(only punctuation); it cannot be scored")
        gts[i].append(toks[n + k])
    return gts, res


def coco_from_tokens(gts: dict, res: dict, metrics: Iterable[str] = COCO_METRICS) -> dict:
    """Run the requested pycocoevalcap scorers on already tokenized input (see `coco_scores`)."""
    metrics = list(dict.fromkeys(metrics))
    unknown = set(metrics) - set(COCO_METRICS)
    if unknown:
        raise ValueError(f"unknown pycocoevalcap metrics {sorted(unknown)}; known: {COCO_METRICS}")
    out: dict = {}
    bleu_wanted = [m for m in metrics if m.startswith("bleu")]
    if bleu_wanted:
        from pycocoevalcap.bleu.bleu import Bleu

        corpus, per = Bleu(4).compute_score(gts, res, verbose=0)
        for m in bleu_wanted:
            k = int(m[-1]) - 1
            out[m] = {"score": float(corpus[k]), "per_sample": [float(s) for s in per[k]]}
    if "meteor" in metrics:
        score, per = _run_meteor(gts, res)
        out["meteor"] = {"score": score, "per_sample": per}
    if "cider" in metrics:
        if len(gts) < 2:
            raise MetricUnavailable("cider", "CIDEr needs at least 2 samples (document frequencies come from the corpus)")
        from pycocoevalcap.cider.cider import Cider

        score, per = Cider().compute_score(gts, res)
        out["cider"] = {"score": float(score), "per_sample": [float(s) for s in per]}
    return {m: out[m] for m in metrics}


def coco_scores(preds: Sequence[str], refs: Refs, metrics: Iterable[str] = COCO_METRICS) -> dict:
    """Corpus and per-sample BLEU-1..4, METEOR and CIDEr from pycocoevalcap, tokenized once.

    Returns {name: {"score": corpus score, "per_sample": list}} for the requested names.
      * bleuN: corpus BLEU (pycocoevalcap, "closest" reference length); per_sample is the library's
        sentence BLEU (it smooths zero counts with 1e-9/1e-15, so a one-word answer gets ~0 for BLEU-4).
      * meteor: the jar's corpus score (aggregated statistics, not a mean) and its per-segment scores.
      * cider: pycocoevalcap's Cider (CIDEr-D formulation, x10 scale); corpus = mean of per-sample.
        Document frequencies come from the references of *this* call, so per-sample CIDEr depends on the
        whole set scored together; it needs at least 2 samples (with one, every idf is log(1) = 0).
    """
    metrics = list(dict.fromkeys(metrics))
    unknown = set(metrics) - set(COCO_METRICS)
    if unknown:
        raise ValueError(f"unknown pycocoevalcap metrics {sorted(unknown)}; known: {COCO_METRICS}")
    if "cider" in metrics and len(preds) < 2:
        raise MetricUnavailable("cider", "CIDEr needs at least 2 samples (document frequencies come from the corpus)")
    gts, res = coco_tokenize_pairs(preds, refs)
    return coco_from_tokens(gts, res, metrics)
