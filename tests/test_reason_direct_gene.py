"""Reasoning/direct set generation: the rule, a tiny local model (plumbing, resume), a local HTTP endpoint (retries
after a 500 and a timeout, no key in any log, error or file)."""
import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from medvl.jsonio import write_json
from data_process.llm_backends import GenerationError, HTTPBackend, LocalBackend, RetryPolicy, redact_url
from data_process.reason_direct_gene import build_prompt, contains_reference, main, run
from tests.conftest import qa_record, write_image

KEY = "sk-test-7f3a9c"


def test_the_rule():
    assert contains_reference("The lesion is in the left lung.", "left lung")
    assert contains_reference("yes", "Yes.") and contains_reference("It is a CT scan", "CT")
    assert not contains_reference("The lesion is in both left lungs", "left lung")  # whole phrase only
    assert not contains_reference("A CTA of the neck", "CT") and not contains_reference("", "yes")
    # a reasoning output is judged by its final "Answer:" line
    assert not contains_reference("There is no fracture line.\nAnswer: yes", "no", "reasoning")
    assert contains_reference("There is no fracture line.\nAnswer: no", "no", "reasoning")
    assert contains_reference("Bright disc, upper left.\n**Answer:** upper left", "upper left", "reasoning")


def _records(tmp_path, questions):
    img = write_image(tmp_path / "a.png")
    recs = [qa_record(f"r-{q}", img, f"{q}: is there a lesion?", ans, answer_type="closed") for q, ans in questions]
    recs.append(qa_record("g", img, "Locate the lesion.", "lesion", task="grounding",
                          boxes=[{"label": "lesion", "xyxy": [1, 1, 9, 9], "image_size": [100, 120]}]))
    recs.append({"id": "bad", "conversations": [{"from": "human", "value": "q"}]})
    return recs


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


class _Counting(LocalBackend):
    """Our own backend, counting the prompts it is asked to complete."""
    prompts = 0

    def generate(self, prompts):
        type(self).prompts += len(prompts)
        return super().generate(prompts)


def test_tiny_local_model_plumbing_rejection_and_resume(tiny_models, tmp_path):
    recs = _records(tmp_path, [("a", "yes"), ("b", "no"), ("c", "left")])
    backend = _Counting(str(tiny_models["qwen2_vl"]), max_new_tokens=6, batch_size=2)  # project loader, Qwen2-VL
    out = tmp_path / "rd"
    rep = run(recs, backend, out, batch_size=2, progress=False)
    assert _Counting.prompts == 6  # 3 records x 2 kinds; grounding + malformed never sent
    rejected = _lines(out / "rejected.jsonl")
    for kind in ("reasoning", "direct"):
        k = rep["kinds"][kind]
        assert k["accepted"] + k["rejected"] + k["skipped"] == 5
        assert k["skipped_by_reason"] == {"grounding_record": {"count": 1, "ids": ["g"]},
                                          "malformed_record": {"count": 1, "ids": ["bad"]}}
        for row in _lines(out / f"{kind}.jsonl"):  # whatever the random model kept obeys the rule
            g = row["meta"]["generation"]
            assert contains_reference(row["conversations"][-1]["value"], g["reference_answer"], kind)
            assert g["prompt"] == build_prompt(kind, next(r for r in recs if r["id"] == g["source_id"]))
    for row in rejected:  # ... and every rejection is the rule's, with the output kept for inspection
        assert row["reason"] in ("reference_answer_missing", "empty_output")
        assert not contains_reference(row["output"], row["reference_answer"], row["kind"])
    assert sum(rep["kinds"][k]["rejected"] for k in rep["kinds"]) == len(rejected)

    # a kill mid-write: the last line is cut in half; the rerun drops it and redoes only that answer
    victim = out / ("rejected.jsonl" if rejected else "direct.jsonl")
    text = victim.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[-1]
    victim.write_text(text[: len(text) - len(last) - 1] + last[: len(last) // 2])
    _Counting.prompts = 0
    again = run(recs, backend, out, batch_size=2, progress=False)
    assert _Counting.prompts == 1 and again["kinds"] == rep["kinds"]
    assert victim.read_text() == text  # greedy: the same answer again, the file whole
    _Counting.prompts = 0
    run(recs, backend, out, batch_size=2, progress=False)
    assert _Counting.prompts == 0  # nothing left to do


# ------------------------------------------------------------------------------------------------ HTTP endpoint
class _Endpoint(BaseHTTPRequestHandler):
    """A local chat-completions server: Q500 fails once with a 500, Qslow stalls once past the client timeout,
    Qwrong never states the reference, Q401 (any key but KEY) is refused."""
    attempts: dict = {}
    auth: list = []
    lock = threading.Lock()

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        self.auth.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            return self._send(401, {"error": "bad key"})
        tag = re.search(r"(Q\w+):", prompt).group(1)
        kind = "reasoning" if "Explain" in prompt else "direct"
        ref = re.search(r"Reference answer: (.*)\n", prompt).group(1)
        with self.lock:
            n = self.attempts[(tag, kind)] = self.attempts.get((tag, kind), 0) + 1
        if tag == "Q500" and n == 1:
            return self._send(500, {"error": "overloaded"})
        if tag == "Q500always":
            return self._send(503, {"error": "down"})
        if tag == "Qslow" and n == 1:
            time.sleep(1.0)
        text = "I cannot tell." if tag == "Qwrong" else \
            f"The bright disc is the finding.\nAnswer: {ref}" if kind == "reasoning" else f"The answer is {ref}."
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})

    def _send(self, code, obj):
        data = json.dumps(obj).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass


@pytest.fixture
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    _Endpoint.attempts.clear()
    _Endpoint.auth.clear()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1?key={KEY}"  # a key in the URL must not be logged either
    server.shutdown()


def test_http_endpoint_retries_and_never_shows_the_key(endpoint, tmp_path, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TEST_LLM_KEY", KEY)
    recs = _records(tmp_path, [("Q500", "yes"), ("Qslow", "left"), ("Qwrong", "no"), ("Qok", "CT")])
    write_json(tmp_path / "in.json", recs)
    out = tmp_path / "rd"
    argv = ["--input", str(tmp_path / "in.json"), "--output_dir", str(out), "--endpoint", endpoint, "--model_name", "m",
            "--api_key_env", "TEST_LLM_KEY", "--timeout", "0.3", "--backoff", "0.01", "--batch_size", "4"]
    assert main(argv) == 0
    rep = json.loads((out / "report.json").read_text())
    for kind in ("reasoning", "direct"):
        k = rep["kinds"][kind]
        assert (k["accepted"], k["rejected"], k["skipped"]) == (3, 1, 2)
        assert k["rejected_by_reason"] == {"reference_answer_missing": {"count": 1, "ids": ["r-Qwrong"]}}
        assert _Endpoint.attempts[("Q500", kind)] == 2 and _Endpoint.attempts[("Qslow", kind)] == 2
    assert rep["http_retries"] == 4 and rep["generator"]["api_key_set"] is True
    assert set(_Endpoint.auth) == {f"Bearer {KEY}"}  # the key travelled in the header ...
    row = _lines(out / "direct.jsonl")[0]
    assert row["id"] == "r-Q500-direct" and row["conversations"][-1]["value"] == "The answer is yes."
    assert row["meta"]["generation"]["generator"]["endpoint"].startswith("http://127.0.0.1:")
    written = "".join(p.read_text() for p in out.iterdir())
    for text in (written, caplog.text, capsys.readouterr().out):  # ... and nowhere else
        assert KEY not in text
    assert "retry 1/5" in caplog.text and "HTTP 500" in caplog.text and "Timeout" in caplog.text


def test_http_failures_are_named_and_keyless(endpoint, monkeypatch):
    fast = RetryPolicy(timeout=0.3, max_retries=1, backoff=0.01)
    monkeypatch.setenv("WRONG_KEY", "sk-not-it-123")
    with pytest.raises(GenerationError) as e:
        HTTPBackend(endpoint, "m", "WRONG_KEY", policy=fast).complete("Qok: x\nReference answer: y\n", "r-1 (direct)")
    msg = str(e.value)
    assert "r-1 (direct)" in msg and "401" in msg and "$WRONG_KEY" in msg and "sk-not-it" not in msg and KEY not in msg
    monkeypatch.setenv("K", KEY)
    with pytest.raises(GenerationError, match=r"r-2 .*after 2 attempts \(last: HTTP 503"):
        HTTPBackend(endpoint, "m", "K", policy=fast).complete("Q500always: x\nReference answer: y\n", "r-2 (direct)")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(GenerationError, match="r-3: no answer .*after 2 attempts"):
        HTTPBackend(f"http://127.0.0.1:{free}/v1", "m", "K", policy=fast).complete("x", "r-3")
    port = endpoint.split(":")[2].split("/")[0]
    assert redact_url(endpoint) == f"http://127.0.0.1:{port}/v1"
    with pytest.raises(ValueError, match="carries credentials"):
        HTTPBackend(f"http://user:{KEY}@127.0.0.1:{port}/v1", "m", "K")


def test_plain_causal_lm_checkpoint_batched_equals_one_by_one(tmp_path):
    """A text-only checkpoint goes through AutoModelForCausalLM + its chat template, left-padded batches."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from train.tiny_model import CHAT_TEMPLATE, build_tokenizer

    tok = build_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=None)
    Qwen2ForCausalLM(cfg).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    prompts = [build_prompt("direct", qa_record("x", None, "Is there a lesion?", "yes")), "Describe the finding."]
    batched = LocalBackend(str(tmp_path / "lm"), max_new_tokens=5, batch_size=2)
    assert batched.kind == "causal_lm" and batched.describe()["loader"] == "causal_lm"
    single = LocalBackend(str(tmp_path / "lm"), max_new_tokens=5, batch_size=1)
    out = batched.generate(prompts)
    assert len(out) == 2 and all(out) and out == single.generate(prompts)  # random model: some tokens, same ones
