"""Reasoning and direct instruct sets from QA records: an LLM, shown the question and the reference answer, writes
a short reasoning answer and a direct answer for each record.

    # a local checkpoint (transformers; a Qwen-VL checkpoint runs text-only through the project's loader)
    python -m data_process.reason_direct_gene --input data/train.json --output_dir data/rd \\
        --model_name_or_path /models/Qwen2.5-7B-Instruct
    # an OpenAI-compatible endpoint (vLLM, TGI, a hosted API); the key is read from $OPENAI_API_KEY (or --api_key_env)
    python -m data_process.reason_direct_gene --input data/train.json --output_dir data/rd \\
        --endpoint http://localhost:8000/v1 --model_name Qwen2.5-7B-Instruct --batch_size 16

Writes in --output_dir (appending as it goes; a rerun skips finished ids, rejected ones included, and cuts a line
half-written by a kill; delete rejected.jsonl to try the rejected ones again):
  reasoning.jsonl   records `<id>-reasoning`: the source record with its last answer replaced by the reasoning answer
  direct.jsonl      records `<id>-direct`: the same with the direct answer
  rejected.jsonl    {"id", "source_id", "kind", "reason", "output"} for every generated answer that was not kept
  report.json       per kind: input = accepted + rejected + skipped, with the ids of every rejection and skip
meta.generation of each record holds the exact prompt sent, the template name, the generator (model, decoding) and
the reference answer.

The rule (contains_reference): an output is kept only if it contains the reference answer as a whole phrase (case,
whitespace and outer punctuation ignored); for a reasoning output that ends with an "Answer:" line, that line must
hold it (so "no ... Answer: yes" cannot pass for "no"). Empty outputs are rejected as `empty_output`.
Skipped, not sent: malformed records (schema problems) and grounding records (their answer is a box, which the
model family writes at encode time, not text an LLM can restate).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

from tqdm import tqdm

from data_process.llm_backends import GenerationError, HTTPBackend, LocalBackend, RetryPolicy
from medvl.jsonio import DataError, WriteError, completed_ids, read_records, write_json
from medvl.schema import IMAGE_TAG, REGION_TAG, record_problems

log = logging.getLogger("data_process.reason_direct_gene")

KINDS = ("reasoning", "direct")
TEMPLATES = {
    "reasoning": ("reasoning/v1",
                  "You are writing training answers for a medical visual question answering model.\n"
                  "Question about a medical image: {question}\n"
                  "Reference answer: {answer}\n"
                  "Explain in two to four short sentences how the reference answer follows from what the image "
                  "shows, without contradicting it. End with a last line of the form \"Answer: {answer}\"."),
    "direct": ("direct/v1",
               "You are writing training answers for a medical visual question answering model.\n"
               "Question about a medical image: {question}\n"
               "Reference answer: {answer}\n"
               "Reply with one short sentence that answers the question directly and contains the reference answer "
               "word for word."),
}


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split()).strip(" .,;:!?'\"")


def contains_reference(output: str, reference: str, kind: str = "direct") -> bool:
    """Whether a generated answer keeps the reference answer (see the module doc)."""
    ref = _norm(reference)
    if not ref:
        return False
    text = str(output)
    if kind == "reasoning":
        tail = re.split(r"(?im)^\s*\**answer\**\s*:", text)
        text = tail[-1] if len(tail) > 1 else text
    return re.search(rf"(?<!\w){re.escape(ref)}(?!\w)", " ".join(text.lower().split())) is not None


def question_and_answer(rec: dict) -> tuple[str, str]:
    """The last question (image and region tags dropped) and the reference answer of a record."""
    conv = rec["conversations"]
    question = next(t["value"] for t in reversed(conv) if t["from"] == "human")
    question = " ".join(question.replace(IMAGE_TAG, " ").replace(REGION_TAG, "the marked region").split())
    return question, conv[-1]["value"].strip()


def build_prompt(kind: str, rec: dict) -> str:
    question, answer = question_and_answer(rec)
    return TEMPLATES[kind][1].format(question=question, answer=answer)


def skip_reason(rec) -> str | None:
    if record_problems(rec):
        return "malformed_record"
    if (rec.get("meta") or {}).get("task") == "grounding":
        return "grounding_record"
    return None


def generated_record(rec: dict, kind: str, prompt: str, output: str, generator: dict) -> dict:
    conv = [dict(t) for t in rec["conversations"]]
    conv[-1]["value"] = output
    meta = dict(rec.get("meta") or {})
    meta["answer_style"] = kind
    meta["generation"] = {"kind": kind, "template": TEMPLATES[kind][0], "prompt": prompt,
                          "reference_answer": question_and_answer(rec)[1], "source_id": str(rec["id"]),
                          "generator": generator}
    out = {"id": f"{rec['id']}-{kind}"}
    if "image" in rec:
        out["image"] = rec["image"]
    out.update(conversations=conv, meta=meta)
    return out


def _append(path: Path, rows: list[dict]) -> None:
    if rows:
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a full disk: a rerun resumes (a cut last line is dropped)
            raise WriteError(f"{path}: appending failed ({e.strerror or e}); a rerun resumes from here") from None


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run(records: list, backend, out_dir: str | os.PathLike, batch_size: int = 8, kinds=KINDS,
        progress: bool = True) -> dict:
    """Generate, check and append; returns the report (also written to out_dir/report.json)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"{k}.jsonl" for k in kinds}
    rejected_path = out / "rejected.jsonl"
    for p in (*paths.values(), rejected_path):
        p.touch()  # an empty set is a result too
    # the predictions file's resume rule: ids done, a cut last line dropped
    done = {k: completed_ids(p) for k, p in paths.items()}
    done_rejected = completed_ids(rejected_path)
    skipped: dict[str, dict[str, list]] = {k: {} for k in kinds}
    todo = []
    for i, rec in enumerate(records):
        why = skip_reason(rec)
        if why:
            rid = str(rec.get("id", f"<record #{i}>")) if isinstance(rec, dict) else f"<record #{i}>"
            for k in kinds:
                skipped[k].setdefault(why, []).append(rid)
            continue
        left = [k for k in kinds if f"{rec['id']}-{k}" not in done[k] and f"{rec['id']}-{k}" not in done_rejected]
        if left:
            todo.append((rec, left))
    generator = backend.describe()
    bar = tqdm(total=len(todo), desc="reason/direct", disable=not progress, mininterval=2)
    for b in range(0, len(todo), batch_size):
        chunk = todo[b:b + batch_size]
        jobs = [(rec, k, build_prompt(k, rec)) for rec, left in chunk for k in left]
        prompts = [p for _, _, p in jobs]
        if hasattr(backend, "complete"):  # HTTP: name each request in its errors
            outputs = backend.generate(prompts, [f"{rec['id']} ({k})" for rec, k, _ in jobs])
        else:
            outputs = backend.generate(prompts)
        kept: dict[str, list] = {k: [] for k in kinds}
        rejected = []
        for (rec, k, prompt), text in zip(jobs, outputs):
            ref = question_and_answer(rec)[1]
            reason = "empty_output" if not text.strip() else None if contains_reference(text, ref, k) \
                else "reference_answer_missing"
            if reason:
                rejected.append({"id": f"{rec['id']}-{k}", "source_id": str(rec["id"]), "kind": k, "reason": reason,
                                 "reference_answer": ref, "output": text})
            else:
                kept[k].append(generated_record(rec, k, prompt, text, generator))
        for k in kinds:
            _append(paths[k], kept[k])
        _append(rejected_path, rejected)
        bar.update(len(chunk))
    bar.close()
    report = _report(records, kinds, paths, rejected_path, skipped, generator,
                     retries=getattr(backend, "retries", 0))
    write_json(out / "report.json", report)
    return report


def _report(records, kinds, paths, rejected_path, skipped, generator, retries) -> dict:
    rejected_rows = _rows(rejected_path)
    out = {"input": len(records), "generator": generator, "http_retries": retries, "templates":
           {k: {"name": TEMPLATES[k][0], "text": TEMPLATES[k][1]} for k in kinds}, "kinds": {}}
    for k in kinds:
        accepted = len(_rows(paths[k]))
        rej: dict[str, list] = {}
        for r in rejected_rows:
            if r["kind"] == k:
                rej.setdefault(r["reason"], []).append(r["source_id"])
        n_rej, n_skip = sum(map(len, rej.values())), sum(map(len, skipped[k].values()))
        out["kinds"][k] = {"accepted": accepted, "rejected": n_rej, "skipped": n_skip,
                           "rejected_by_reason": {r: {"count": len(v), "ids": v} for r, v in sorted(rej.items())},
                           "skipped_by_reason": {r: {"count": len(v), "ids": v} for r, v in sorted(skipped[k].items())},
                           "output": str(paths[k])}
        if accepted + n_rej + n_skip != len(records):
            raise DataError(f"{k}: {len(records)} records but {accepted} accepted + {n_rej} rejected + {n_skip} "
                            f"skipped in {paths[k].parent}: were its outputs written from another input?")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_process.reason_direct_gene", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, nargs="+", help="QA records (.json/.jsonl)")
    p.add_argument("--output_dir", "--out_dir", dest="output_dir", required=True, metavar="DIR",
                   help="folder of reasoning.jsonl, direct.jsonl, rejected.jsonl, report.json (--out_dir: old name)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model_name_or_path", "--model", dest="model_name_or_path", metavar="PATH",
                     help="local checkpoint dir (transformers); --model is the old name")
    src.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    p.add_argument("--model_name", default=None, help="with --endpoint: the model name the server expects")
    p.add_argument("--api_key_env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--kinds", default="reasoning,direct", help="which sets to write (default both)")
    p.add_argument("--batch_size", type=int, default=8, help="records per step (local batch / parallel requests)")
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--timeout", type=float, default=60.0, help="HTTP: seconds per request")
    p.add_argument("--max_retries", type=int, default=5, help="HTTP: retries after the first attempt")
    p.add_argument("--backoff", type=float, default=1.0, help="HTTP: first retry wait in seconds (doubles each time)")
    p.add_argument("--dtype", default="auto", help="local: auto | bfloat16 | float16 | float32")
    p.add_argument("--limit", type=int, default=None, help="first N records only")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    kinds = tuple(k.strip() for k in a.kinds.split(",") if k.strip())
    if not kinds or any(k not in KINDS for k in kinds):
        p.error(f"--kinds must be a subset of {','.join(KINDS)}")
    try:
        records = [r for path in a.input for r in read_records(path)][: a.limit]
        if a.endpoint:
            if not a.model_name:
                p.error("--endpoint needs --model_name")
            backend = HTTPBackend(a.endpoint, a.model_name, a.api_key_env, a.max_new_tokens, a.batch_size,
                                  RetryPolicy(timeout=a.timeout, max_retries=a.max_retries, backoff=a.backoff))
        else:
            backend = LocalBackend(a.model_name_or_path, a.max_new_tokens, a.batch_size, a.dtype)
        report = run(records, backend, a.output_dir, a.batch_size, kinds)
    except (DataError, GenerationError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for k, r in report["kinds"].items():
        print(f"{k}: {r['accepted']} accepted, {r['rejected']} rejected, {r['skipped']} skipped -> {r['output']}")
    print(f"report: {Path(a.output_dir) / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
