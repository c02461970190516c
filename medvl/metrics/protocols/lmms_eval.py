"""lmms_eval: SLAKE as lmms-eval's task scores it, applied to every dataset.

Source: EvolvingLMMs-Lab/lmms-eval, lmms_eval/tasks/slake/utils.py and _default_template_yaml (commit 75571cfe; the
task was added in #1392). lmms-eval has no VQA-RAD or PathVQA task; its SLAKE rule is applied to them unchanged.

Closed = the dataset's answer type (SLAKE's answer_type, lowercased; here type_mapping.json's). Every sample, open or
closed, is right when normalize_answer(prediction) == normalize_answer(reference), where normalize_answer:
strip and lowercase; every parenthesised span "( ... )" and "（ ... ）" becomes a space (so "CT (computed tomography)"
is "ct"); every ASCII punctuation character and the Chinese punctuation of the source's ZH_PUNCTUATION becomes a
space; whitespace collapsed; the whole answer "x ray" or "xray" becomes "xray"; the whole answer, if one of yes /
yeah / yep / true (是, 是的, 有, 包含, 可以, 能, 会, 正常), becomes "yes", if one of no / nope / false (否, 不是, 没有,
无, 不包含, 不能, 不会, 不可以, 不正常, 异常), "no". Only the whole answer is mapped: "yes, it is" stays as it is and
does not equal "yes". Metrics: accuracy per category (slake_accuracy / slake_open_accuracy / slake_closed_accuracy).
Generation: a user turn of the image and the question + "\\nAnswer the question using a single word or phrase."
(Chinese questions: "\\n请用一个词或短语回答问题。"), no system turn (the model's default), greedy, max_new_tokens 32.
"""
from __future__ import annotations

import re
import string

from medvl.metrics.protocols.base import Generation, MetricDef, Protocol, SampleScore

EN_YES = {"yes", "yeah", "yep", "true"}
EN_NO = {"no", "nope", "false"}
ZH_YES = {"是", "是的", "有", "包含", "可以", "能", "会", "正常"}
ZH_NO = {"否", "不是", "没有", "无", "不包含", "不能", "不会", "不可以", "不正常", "异常"}
ZH_PUNCTUATION = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～、，。；：《》？【】（）"
_TABLE = str.maketrans({c: " " for c in string.punctuation + ZH_PUNCTUATION})


def normalize_answer(answer) -> str:
    """lmms-eval's SLAKE normalisation (rules in the module docstring)."""
    text = "" if answer is None else str(answer)
    text = text.strip().lower()
    text = re.sub(r"\([^)]*\)", " ", text)
    text = re.sub(r"（[^）]*）", " ", text)
    text = re.sub(r"\s+", " ", text.translate(_TABLE)).strip()
    if text in ("x ray", "xray"):
        text = "xray"
    if text in EN_YES or text in ZH_YES:
        return "yes"
    if text in EN_NO or text in ZH_NO:
        return "no"
    return text


def score(prediction: str, references: list[str], *, answer_type: str, dataset: str, question: str) -> SampleScore:
    right = float(normalize_answer(prediction) == normalize_answer(references[0]))
    return SampleScore(answer_type == "closed", {"accuracy": right})


SUFFIXES = {"single_word": "\nAnswer the question using a single word or phrase.",
            "single_word_zh": "\n请用一个词或短语回答问题。"}

PROTOCOL = Protocol(
    name="lmms_eval",
    title="lmms_eval (lmms-eval SLAKE task: normalised exact match with aliases and yes/no synonyms)",
    closed_means="the dataset's answer type (type_mapping.json answer_type)",
    rules="right when the normalised prediction equals the normalised reference (lowercase, parentheses and "
          "punctuation removed, x-ray alias, whole-answer yes/no synonyms), open and closed alike",
    source="EvolvingLMMs-Lab/lmms-eval lmms_eval/tasks/slake/utils.py, _default_template_yaml (commit 75571cfe)",
    metrics=(MetricDef("accuracy", "accuracy (normalised exact match)", ci=True),),
    generation=Generation(system=None, max_new_tokens=32, suffixes=SUFFIXES,
                          choose=lambda view: "single_word_zh" if view.get("lang") == "zh" else "single_word",
                          decoding="greedy (temperature 0, do_sample false), max_new_tokens 32",
                          source="EvolvingLMMs-Lab/lmms-eval lmms_eval/tasks/slake/_default_template_yaml, "
                                 "slake_zh.yaml (commit 75571cfe)"),
    scorer=score,
    datasets_note="the source defines SLAKE only; VQA-RAD, PathVQA and others are scored by the same rule",
)
