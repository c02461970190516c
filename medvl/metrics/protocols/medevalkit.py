"""medevalkit: VQA-RAD / SLAKE / PathVQA as MedEvalKit's rule-based scorers do them (the Lingshu paper's tables).

Source: alibaba-damo-academy/MedEvalKit (commit 9b12e3b): utils/VQA_RAD/VQA_RAD.py, utils/PATH_VQA/PATH_VQA.py,
utils/SLAKE/SLAKE.py (cal_metrics), utils/utils.py (parse_response, judge_judgement, judge_close_end_vqa,
judge_open_end_vqa, calculate_f1, bleu, tokenize), utils/question_formats.py (the prompts).

What "closed" means depends on the dataset, as in the source:
  * VQA-RAD, PathVQA (and any dataset the source does not define): closed = the reference, lowercased and stripped,
    is "yes" or "no". Every other question is open, including VQA-RAD's closed choice questions.
  * SLAKE: closed = the dataset's answer type (CLOSED). A closed reference that is exactly "yes" or "no" (case
    sensitive, as the source tests it before lowercasing) is judged yes/no; any other closed reference must equal
    the parsed answer (periods and line breaks removed).
The answer is first taken out of a \\boxed{...} (the last one) or <answer>...</answer>, then `parse_response`:
lowercase, the same extraction again, then the text after the last of "**answer**:", "**answer**", "*answer*:",
"**answer:**", "answer is", "answer:", "答案:", "final answer", "final answer is".
  * yes/no judgement (judge_judgement): periods and line breaks removed; right when exactly one of "yes" / "no"
    occurs as characters ("yes" xor "no": "Yes, there is no fracture" holds both, so wrong; "not" holds "no") and
    the reference occurs in it.
  * open: accuracy = exact equality of the parsed answer and the lowercased reference (em); BLEU-1..4 (nltk
    sentence_bleu, uniform weights, no smoothing, over tokenize(): lowercase, "." -> " .", split on single spaces);
    ROUGE-1/2/L F; token precision/recall/F1 over *sets* of whitespace words.
Overall accuracy = (closed right + open em right) / all ("total metrics" acc, the number the tables publish).
Departures, each because the source's behaviour is not a score: the `rouge` package (pltrdy) is replaced by
rouge-score without stemming; an empty answer scores 0 where the source raises (rouge "Hypothesis is empty",
calculate_f1's bare 0). The source's judge_open_end_vqa unpacks calculate_f1's (f1, precision, recall) as
(precision, recall, f1), so its "precision" column holds F1, "recall" precision and "f1" recall; here each is named
for what it is. Its optional LLM judge of open answers (use_llm_judge; eval.sh sets it True) is not run.
Generation: no system turn (the model's default), the question + a suffix chosen by the rule above (yes/no
reference: "Please output 'yes' or 'no'(no extra output)."; SLAKE closed: "Answer the question using a single word or
phrase."; else "Please answer the question concisely."; Chinese SLAKE questions get the source's Chinese forms),
greedy (temperature 0), max_new_tokens 1024 (eval.py's default; eval.sh passes 8192).
"""
from __future__ import annotations

import warnings

from nltk.translate.bleu_score import sentence_bleu
from rouge_score import rouge_scorer

from medvl.metrics.protocols.base import Generation, MetricDef, Protocol, SampleScore

_PATTERNS = ("**answer**:", "**answer**", "*answer*:", "**answer:**", "answer is", "answer:", "答案:", "final answer",
             "final answer is")
_ROUGE = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)


def boxed_content(text: str) -> str | None:
    """The content of the last \\boxed{...} (braces matched), None when there is none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def tagged(text: str, tag: str) -> str:
    """Every <tag>...</tag> span joined by spaces; the text itself when there is none (the source's extract())."""
    parts, pos = [], 0
    open_t, close_t = f"<{tag}>", f"</{tag}>"
    while (s := text.find(open_t, pos)) != -1:
        e = text.find(close_t, s + len(open_t))
        if e == -1:
            break
        parts.append(text[s + len(open_t):e])
        pos = e + len(close_t)
    joined = " ".join(parts).strip()
    return joined or text


def extract_answer(response: str) -> str:
    """cal_metrics' first step: a \\boxed{} answer, else an <answer> span, else the response."""
    boxed = boxed_content(response)
    if boxed is not None:
        return boxed
    return tagged(response, "answer") if "<answer>" in response else response


def parse_response(response: str) -> str:
    response = response.lower()
    if "boxed" in response:
        boxed = boxed_content(response)
        response = boxed if boxed is not None else "None"  # mathruler's answer when "boxed" holds no \boxed{}
    elif "<answer>" in response:
        response = tagged(response, "answer")
    for pattern in _PATTERNS:
        if pattern in response:
            response = response.split(pattern)[-1]
    return response


def judge_yes_no(reference: str, response: str) -> float:
    r = parse_response(response).replace("\n", "").replace(".", "")
    return float((("yes" in r) != ("no" in r)) and reference.lower() in r)


def judge_closed_exact(reference: str, response: str) -> float:
    return float(parse_response(response).replace("\n", "").replace(".", "") == reference.lower())


def _tokenize(text: str) -> list[str]:
    return text.lower().replace(".", " .").split(" ")


def _bleu(pred: str, ref: str, n: int) -> float:
    with warnings.catch_warnings():  # nltk warns on every answer shorter than n words
        warnings.simplefilter("ignore")
        return float(sentence_bleu([_tokenize(ref)], _tokenize(pred), weights=[1 / n] * n))


def set_prf(pred: str, ref: str) -> tuple[float, float, float]:
    """(precision, recall, f1) over sets of lowercased whitespace words; 0 when either side is empty."""
    p, r = set(pred.lower().split()), set(ref.lower().split())
    if not p or not r:
        return 0.0, 0.0, 0.0
    common = len(p & r)
    if not common:
        return 0.0, 0.0, 0.0
    precision, recall = common / len(p), common / len(r)
    return precision, recall, 2 * precision * recall / (precision + recall)


def open_metrics(reference: str, response: str) -> dict[str, float]:
    answer, parsed = reference.lower(), parse_response(response)
    precision, recall, f1 = set_prf(parsed, answer)
    if parsed.strip():
        rouge = _ROUGE.score(answer, parsed)
        r1, r2, rl = (rouge[k].fmeasure for k in ("rouge1", "rouge2", "rougeL"))
    else:
        r1 = r2 = rl = 0.0
    return {"accuracy": float(parsed == answer), **{f"bleu{n}": _bleu(parsed, answer, n) for n in range(1, 5)},
            "rouge1": r1, "rouge2": r2, "rougel": rl, "precision": precision, "recall": recall, "f1": f1}


def _is_slake(dataset: str) -> bool:
    return dataset.startswith("slake")


def is_closed(reference: str, answer_type: str, dataset: str) -> bool:
    return answer_type == "closed" if _is_slake(dataset) else reference.lower().strip() in ("yes", "no")


def score(prediction: str, references: list[str], *, answer_type: str, dataset: str, question: str) -> SampleScore:
    ref = references[0]
    response = extract_answer(prediction)
    if _is_slake(dataset):
        if answer_type == "closed":
            right = judge_yes_no(ref, response) if ref in ("yes", "no") else judge_closed_exact(ref, response)
            return SampleScore(True, {"accuracy": right})
        return SampleScore(False, open_metrics(ref, response))
    ref, response = ref.lower().strip(), response.lower().strip()
    if ref in ("yes", "no"):
        return SampleScore(True, {"accuracy": judge_yes_no(ref, response)})
    return SampleScore(False, open_metrics(ref, response))


SUFFIXES = {"judgement": "\nPlease output 'yes' or 'no'(no extra output).",
            "close_ended": "\nAnswer the question using a single word or phrase.",
            "open_ended": "\nPlease answer the question concisely.",
            "judgement_zh": "\n请输出'是'或'否'(不要有任何其它输出)。",
            "close_ended_zh": "\n请用一个单词或者短语回答该问题。",
            "open_ended_zh": "\n请简要回答该问题。"}


def choose_suffix(view: dict) -> str:
    zh = "_zh" if view.get("lang") == "zh" else ""
    dataset = (view.get("dataset") or "").lower()
    if _is_slake(dataset):
        return ("close_ended" if view.get("answer_type") == "closed" else "open_ended") + zh
    return ("judgement" if str(view.get("reference", "")).lower().strip() in ("yes", "no") else "open_ended") + zh


PROTOCOL = Protocol(
    name="medevalkit",
    title="medevalkit (MedEvalKit rule-based: yes/no xor and contained; open exact match)",
    closed_means="a yes/no reference (VQA-RAD, PathVQA, other datasets); the dataset's answer type for SLAKE",
    rules="closed yes/no: right when exactly one of 'yes'/'no' occurs and the reference occurs (SLAKE's other closed "
          "answers: exact); open: exact equality of the parsed answer; overall accuracy = closed right + open exact "
          "over all",
    source="alibaba-damo-academy/MedEvalKit utils/VQA_RAD/VQA_RAD.py, utils/SLAKE/SLAKE.py, utils/PATH_VQA/PATH_VQA.py, "
           "utils/utils.py, utils/question_formats.py (commit 9b12e3b)",
    metrics=(MetricDef("accuracy", "accuracy (closed: yes/no judgement; open: exact match)", ci=True),
             *(MetricDef(f"bleu{n}", f"open BLEU-{n} (nltk, no smoothing)") for n in range(1, 5)),
             MetricDef("rouge1", "open ROUGE-1 F"), MetricDef("rouge2", "open ROUGE-2 F"),
             MetricDef("rougel", "open ROUGE-L F"), MetricDef("precision", "open token precision (word sets)"),
             MetricDef("recall", "open token recall (word sets)"), MetricDef("f1", "open token F1 (word sets)")),
    generation=Generation(system=None, max_new_tokens=1024, suffixes=SUFFIXES, choose=choose_suffix,
                          decoding="greedy (temperature 0), max_new_tokens 1024 (eval.py default; eval.sh: 8192)",
                          source="alibaba-damo-academy/MedEvalKit utils/question_formats.py, eval.py, "
                                 "models/Qwen2_5_VL/Qwen2_5_VL_hf.py (commit 9b12e3b)"),
    scorer=score,
    datasets_note="rules for VQA-RAD, PathVQA and SLAKE; other datasets scored by the VQA-RAD rule",
)
