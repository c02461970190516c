"""Text generation backends for data recipes: a local checkpoint through transformers, or an OpenAI-compatible
chat-completions endpoint over HTTP. Both take a list of prompts and return one completion per prompt, in order.

Local: a Qwen-VL checkpoint goes through the project's loader and encoding path (medvl/loading.py, medvl/encoding.py,
greedy batched decoding of medvl/generation.py; the prompt is a text-only user turn); any other checkpoint through
AutoModelForCausalLM with its tokenizer's chat template. Greedy decoding: the same data for the same checkpoint.

HTTP: POST <endpoint>/chat/completions with {"model", "messages": [{"role": "user", ...}], "temperature": 0,
"max_tokens"}. The API key is read from an environment variable (never an argument, so it stays out of shell history
and process lists) and only ever placed in the Authorization header: it is in no log line, error or output.
Each request has a timeout; connection errors, timeouts, HTTP 429 and 5xx are retried with exponential backoff and
jitter (a Retry-After header is honoured up to max_backoff); other 4xx fail at once. After the last retry the
error names the request and the reason. Redirects are never followed: urllib would resend the Authorization header to
wherever a 3xx points (another host included), so a redirect fails at once naming its target; pass the final URL as
--endpoint.
"""
from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from medvl.families import get_family
from medvl.generation import greedy_generate
from medvl.loading import load_model_and_processor
from medvl.schema import make_record

log = logging.getLogger(__name__)


class GenerationError(RuntimeError):
    """A prompt could not be completed (after retries, for HTTP)."""


# ------------------------------------------------------------------------------------------------ local
class LocalBackend:
    def __init__(self, path: str, max_new_tokens: int = 256, batch_size: int = 8, dtype: str = "auto",
                 device: str | None = None, trust_remote_code: bool = False):
        self.path, self.max_new_tokens, self.batch_size = path, max_new_tokens, batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        try:
            get_family(config)
            self.kind = "qwen_vl"
        except ValueError:
            self.kind = "causal_lm"
        if self.kind == "qwen_vl":
            self.model, self.processor, _ = load_model_and_processor(path, dtype=dtype, max_len=10 ** 9,
                                                                     trust_remote_code=trust_remote_code)
            self.tokenizer = self.processor.tokenizer
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            self.tokenizer.padding_side = "left"
            if self.tokenizer.pad_token_id is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
        self.model.to(self.device).eval()

    @property
    def name(self) -> str:
        return self.path

    def describe(self) -> dict:
        return {"backend": "local", "model": self.path, "loader": self.kind,
                "decoding": {"do_sample": False, "num_beams": 1, "max_new_tokens": self.max_new_tokens}}

    def generate(self, prompts: list[str]) -> list[str]:
        if self.kind == "qwen_vl":
            records = [make_record(f"prompt-{i}", None, p, "-", {}) for i, p in enumerate(prompts)]
            return greedy_generate(self.model, self.processor, records, self.batch_size, self.max_new_tokens)
        return self._generate_causal(prompts)

    def _generate_causal(self, prompts: list[str]) -> list[str]:
        tok, outs = self.tokenizer, []
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                 if tok.chat_template else p for p in prompts]
        for i in range(0, len(texts), self.batch_size):
            batch = tok(texts[i:i + self.batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with torch.no_grad():
                gen = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1,
                                          pad_token_id=tok.pad_token_id)
            outs += [t.strip() for t in tok.batch_decode(gen[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]
        return outs


# ------------------------------------------------------------------------------------------------ HTTP
def redact_url(url: str) -> str:
    """The endpoint as it may be logged: no user:password@, no query string (keys sometimes travel there)."""
    p = urllib.parse.urlsplit(url)
    host = p.hostname or ""
    netloc = host + (f":{p.port}" if p.port else "")
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, "", ""))


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """No redirect is followed: the 3xx reaches the caller as an HTTPError (with its Location header)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


@dataclass
class RetryPolicy:
    timeout: float = 60.0          # seconds per request
    max_retries: int = 5           # after the first attempt
    backoff: float = 1.0           # first wait; doubles per retry
    max_backoff: float = 60.0
    jitter: float = 0.25           # +- fraction of the wait, so parallel clients do not retry in lockstep

    def wait(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        base = min(self.max_backoff, self.backoff * 2 ** attempt)
        if retry_after is not None:
            base = min(self.max_backoff, max(base, retry_after))
        return base * (1 + rng.uniform(-self.jitter, self.jitter))


class HTTPBackend:
    def __init__(self, endpoint: str, model_name: str, api_key_env: str | None = "OPENAI_API_KEY",
                 max_new_tokens: int = 256, concurrency: int = 8, policy: RetryPolicy | None = None,
                 temperature: float = 0.0, seed: int = 0):
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--endpoint must be an http(s) URL, got {redact_url(endpoint)!r}")
        if parts.username or parts.password:
            raise ValueError("--endpoint carries credentials (user:password@); put the key in the environment "
                             "variable named by --api_key_env instead")
        path = parts.path.rstrip("/")
        path += "" if path.endswith("/chat/completions") else "/chat/completions"
        self.url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
        self.model_name, self.max_new_tokens, self.concurrency = model_name, max_new_tokens, max(1, concurrency)
        self.policy, self.temperature = policy or RetryPolicy(), temperature
        self._key = os.environ.get(api_key_env) if api_key_env else None
        self.api_key_env = api_key_env
        self._rng = random.Random(seed)
        self._opener = urllib.request.build_opener(_RefuseRedirects)
        self.retries = 0  # retried requests in this process, for the report

    @property
    def name(self) -> str:
        return f"{self.model_name} @ {redact_url(self.url)}"

    def describe(self) -> dict:
        return {"backend": "http", "model": self.model_name, "endpoint": redact_url(self.url),
                "api_key_env": self.api_key_env, "api_key_set": bool(self._key),
                "decoding": {"temperature": self.temperature, "max_tokens": self.max_new_tokens},
                "timeout_s": self.policy.timeout, "max_retries": self.policy.max_retries}

    def _request(self, prompt: str) -> bytes:
        body = json.dumps({"model": self.model_name, "messages": [{"role": "user", "content": prompt}],
                           "temperature": self.temperature, "max_tokens": self.max_new_tokens}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with self._opener.open(req, timeout=self.policy.timeout) as resp:
            return resp.read()

    def complete(self, prompt: str, what: str = "request") -> str:
        last = ""
        for attempt in range(self.policy.max_retries + 1):
            retry_after = None
            try:
                data = json.loads(self._request(prompt).decode("utf-8"))
                content = data["choices"][0]["message"]["content"]
                if not isinstance(content, str):
                    raise GenerationError(f"{what}: the endpoint's reply has no text content")
                return content.strip()
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} {e.reason}"
                if 300 <= e.code < 400:
                    target = urllib.parse.urljoin(self.url, (e.headers or {}).get("Location") or "")
                    raise GenerationError(f"{what}: {redact_url(self.url)} answered {last}, a redirect to "
                                          f"{redact_url(target)}; not followed, so the API key goes nowhere else: "
                                          f"pass the final URL as --endpoint") from None
                if e.code != 429 and not 500 <= e.code < 600:
                    hint = " (check the API key in $" + str(self.api_key_env) + ")" if e.code in (401, 403) else ""
                    raise GenerationError(f"{what}: {redact_url(self.url)} answered {last}{hint}") from None
                ra = e.headers.get("Retry-After") if e.headers else None
                retry_after = float(ra) if ra and ra.replace(".", "", 1).isdigit() else None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                reason = getattr(e, "reason", e)
                last = f"{type(e).__name__}: {reason}"
            except (ValueError, KeyError, IndexError, TypeError) as e:
                last = f"malformed reply ({type(e).__name__})"
            if attempt < self.policy.max_retries:
                wait = self.policy.wait(attempt, retry_after, self._rng)
                log.warning("%s: %s from %s; retry %d/%d in %.2f s", what, last, redact_url(self.url), attempt + 1,
                            self.policy.max_retries, wait)
                self.retries += 1
                time.sleep(wait)
        raise GenerationError(f"{what}: no answer from {redact_url(self.url)} after {self.policy.max_retries + 1} "
                              f"attempts (last: {last})")

    def generate(self, prompts: list[str], names: list[str] | None = None) -> list[str]:
        names = names or [f"prompt {i}" for i in range(len(prompts))]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self.complete, prompts, names))
