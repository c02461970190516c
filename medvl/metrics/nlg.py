"""Generation metrics through their reference implementations: ROUGE (rouge-score), BLEU / METEOR / CIDEr
(pycocoevalcap), and optional nltk sentence BLEU / METEOR for comparison.

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
  * nltk variants: `normalize.tokens(text, keep_articles=True)` (lowercase, punctuation to spaces,
    whitespace split) because nltk's word_tokenize needs data that cannot be downloaded offline.

BLEU caveat (DESIGN.md pitfall): BLEU-4 of a correct one-word answer is meaningless (pycocoevalcap gives
~3e-5 per sample, nltk with smoothing method1 gives 0.1778). Report BLEU for open-ended answers only;
`compute_all` does not know answer types, so the caller must select open-ended samples.

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
import shutil
import subprocess
import unicodedata
import warnings
from typing import Iterable, Sequence

from medvl.metrics._checks import check_pairs
from medvl.metrics.errors import MetricUnavailable
from medvl.metrics.normalize import tokens
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

def _require_java(metric: str) -> str:
    """pycocoevalcap starts `java` from PATH; check first so the failure names the cause."""
    java = shutil.which("java")
    if java is None:
        raise MetricUnavailable(metric, "no `java` executable on PATH; pycocoevalcap runs its PTBTokenizer and "
                                        "METEOR as Java jars (install a JRE, e.g. apt-get install default-jre-headless)")
    return java


def _sanitize(text: str) -> str:
    """One line per answer for PTBTokenizer's -preserveLines protocol (see module docstring)."""
    return " ".join(text.splitlines())


def check_meteor_fields(gts: dict, res: dict) -> None:
    """Refuse text holding "|||", the METEOR jar's field separator (it would split into extra references)."""
    for k in gts:
        if any("|||" in t for t in list(gts[k]) + list(res[k])):
            raise MetricUnavailable("meteor", f"sample {k}: text contains '|||', the METEOR jar's field separator; "
                                              "tokenize with ptb_tokenize (it splits it) before scoring")


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """PTB-tokenize strings exactly as pycocoevalcap does (one JVM call), with an alignment check.

    pycocoevalcap's tokenizer ignores the Java exit status and zips its output lines with the inputs, so a
    failing JVM would yield silently truncated or empty results; the sentinel line appended here must come
    back as the last output or `MetricUnavailable` is raised.
    """
    _require_java("ptb_tokenizer")
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
    """Run pycocoevalcap's Meteor once and always stop its JVM.

    Meteor.compute_score holds a lock and does not release it on error; Meteor.__del__ then blocks on that
    lock forever at garbage collection. We release it and stop the process ourselves.
    """
    _require_java("meteor")
    check_meteor_fields(gts, res)
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        m = Meteor()
    except OSError as e:
        raise MetricUnavailable("meteor", f"could not start the METEOR jar: {e!r}") from e
    try:
        score, scores = m.compute_score(gts, res)
        return float(score), [float(s) for s in scores]
    except (OSError, ValueError) as e:  # broken pipe / empty line from a dead JVM
        proc = m.meteor_p
        err = ""
        try:
            proc.wait(timeout=5)  # EOF on stdout can arrive just before the JVM has exited
        except subprocess.TimeoutExpired:
            pass
        if proc.poll() is not None and proc.stderr is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:]
        raise MetricUnavailable("meteor", f"METEOR jar failed ({e!r}); exit status {proc.poll()}; "
                                          f"stderr: {err.strip() or '<none>'}") from e
    finally:
        if m.lock.locked():
            m.lock.release()
        try:
            m.meteor_p.stdin.close()
        except OSError:  # unflushed input to a JVM that already died
            pass
        m.meteor_p.kill()
        m.meteor_p.wait()


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


# --------------------------------------------------------------------------- nltk (optional, for comparison)

def nltk_sentence_bleu(preds: Sequence[str], refs: Sequence[str], *, smoothing: str = "method1",
                       max_n: int = 4) -> list[float]:
    """Per-sample nltk sentence BLEU-`max_n` with the named nltk SmoothingFunction method (e.g. "method1").

    For comparison with papers that report nltk BLEU: with method1 a correct one-word answer scores 0.1778,
    which is why BLEU belongs to open-ended answers only.
    """
    check_pairs(preds, refs)
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    smooth = getattr(SmoothingFunction(), smoothing, None)
    if smoothing == "none":
        smooth = None
    elif smooth is None or not smoothing.startswith("method"):
        raise ValueError(f"unknown nltk smoothing {smoothing!r}; use 'none' or 'method0'..'method7'")
    weights = tuple([1.0 / max_n] * max_n)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns on zero n-gram counts; the score itself is what we report
        for p, r in zip(preds, refs):
            out.append(float(sentence_bleu([tokens(r, keep_articles=True)], tokens(p, keep_articles=True),
                                           weights=weights, smoothing_function=smooth)))
    return out


def _require_wordnet():
    try:
        from nltk.corpus import wordnet

        if not wordnet.synsets("dog"):
            raise LookupError("wordnet.synsets('dog') is empty")
        return wordnet
    except (LookupError, OSError) as e:
        raise MetricUnavailable("meteor_nltk", "nltk WordNet data not found (nltk cannot download offline); run "
                                               "`python -m medvl.metrics.wordnet_setup` after installing the Debian "
                                               f"packages wordnet-base and wordnet-sense-index. Cause: {e}") from e


def nltk_meteor(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Per-sample nltk METEOR (exact, Porter-stem and WordNet-synonym matches). Needs WordNet (wordnet_setup.py).

    nltk has no corpus-level METEOR; the mean of these is not the jar's corpus METEOR.
    """
    check_pairs(preds, refs)
    wn = _require_wordnet()
    from nltk.translate.meteor_score import meteor_score

    return [float(meteor_score([tokens(r, keep_articles=True)], tokens(p, keep_articles=True), wordnet=wn))
            for p, r in zip(preds, refs)]
