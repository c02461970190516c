"""#17.2: the API key never follows a redirect. Two servers on loopback ports: the endpoint answers every request with
a redirect to the other, which would answer a valid completion; the other must never see an Authorization header
and the run must fail with a one-line error naming the redirect (rc 2), not end rc 0."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from medvl.jsonio import write_json
from data_process.llm_backends import GenerationError, HTTPBackend, RetryPolicy
from data_process.reason_direct_gene import main
from medvl.schema import make_record

KEY = "sk-redirect-test-4242"


def _server(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def servers():
    """(endpoint URL, redirect code setter, headers the other server received)."""
    seen: list[dict] = []
    state = {"code": 302}

    class Other(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _answer(self):
            seen.append(dict(self.headers))
            n = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(n)
            data = json.dumps({"choices": [{"message": {"content": "The answer is yes.\nAnswer: yes"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

    other = _server(Other)

    class Redirecting(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _redirect(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(state["code"])
            self.send_header("Location", f"http://127.0.0.1:{other.server_address[1]}/v1/chat/completions?t=x")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _redirect

    endpoint = _server(Redirecting)
    yield f"http://127.0.0.1:{endpoint.server_address[1]}/v1", state, seen
    for s in (endpoint, other):
        s.shutdown()
        s.server_close()


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirect_is_refused_and_names_its_target(servers, monkeypatch, code):
    url, state, seen = servers
    state["code"] = code
    monkeypatch.setenv("REDIRECT_KEY", KEY)
    backend = HTTPBackend(url, "m", "REDIRECT_KEY", policy=RetryPolicy(timeout=5, max_retries=2, backoff=0.01))
    with pytest.raises(GenerationError) as e:
        backend.complete("Q: x\nReference answer: yes\n", "r-1 (direct)")
    msg = str(e.value)
    assert seen == []  # nothing reached the other server, so neither did the key
    assert f"HTTP {code}" in msg and "redirect to http://127.0.0.1:" in msg and "not followed" in msg
    assert "r-1 (direct)" in msg and KEY not in msg and "?t=x" not in msg and "\n" not in msg
    assert backend.retries == 0  # a redirect is not a transient failure


def test_run_through_a_redirecting_endpoint_fails_and_leaks_nothing(servers, tmp_path, monkeypatch, capsys):
    url, _, seen = servers
    monkeypatch.setenv("REDIRECT_KEY", KEY)
    recs = [make_record("r-1", None, "Is it normal?", "yes", {"dataset": "t", "answer_type": "closed"})]
    write_json(tmp_path / "in.json", recs)
    rc = main(["--input", str(tmp_path / "in.json"), "--out_dir", str(tmp_path / "rd"), "--endpoint", url,
               "--model_name", "m", "--api_key_env", "REDIRECT_KEY", "--timeout", "5", "--max_retries", "1",
               "--backoff", "0.01", "--kinds", "direct"])
    err = capsys.readouterr().err
    assert [h.get("Authorization") for h in seen] == []  # the other host never saw the key (nor any request)
    assert rc == 2 and "redirect to" in err and KEY not in err
    assert (tmp_path / "rd" / "direct.jsonl").read_text() == ""
