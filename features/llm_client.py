"""A small client for OpenAI-compatible chat-completions servers (vLLM, llama.cpp, Ollama, hosted APIs), and the
request cache of `xenofeat explain` (`RUN/features/llm.jsonl`).

Standard library only (urllib): one POST per request to `ENDPOINT/chat/completions` with a timeout, retried with
exponential back-off on 429, 5xx, timeouts and malformed replies (a `Retry-After` header is respected, capped at
`MAX_WAIT_S`); any other refusal (an unknown model, a bad key) stops at once with the server's own message. The key
comes only from an environment variable named by the user. A loopback endpoint is never sent through a proxy.

The cache: one JSON object per line, `{"key", "model", "prompt_version", "messages", "reply", "when"}`, the key a
SHA-256 of the model, the prompt version and the messages. Every answer is appended (one `write`, under the run's
store lock, so a rescore publishing at the same time carries it over) as soon as it arrives, so a rerun, or a
resume after the process or the server was killed, sends only what was never answered. A line cut short by a kill
is skipped when read.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from activations.errors import UserError
from features.store.publish import store_lock

CACHE_FILE = "llm.jsonl"
MAX_WAIT_S = 60.0
log = logging.getLogger(__name__)


class Retryable(Exception):
    """A failure worth another try (429, 5xx, a timeout, a malformed reply); `wait` is the server's Retry-After."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


@dataclass(frozen=True)
class Endpoint:
    """Where and how to send chat-completions requests."""

    url: str
    """The server's base URL (`http://127.0.0.1:8000/v1`) or its full `/chat/completions` URL."""
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    """Seconds per request."""
    retries: int = 4
    """Further tries after a retryable failure."""
    backoff: float = 1.0
    """Seconds before the first retry; doubled at each further one."""

    @property
    def chat_url(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"


def check_url(url: str) -> str:
    """The endpoint URL if it is http(s) with a host; UserError naming --endpoint otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"--endpoint: {url[:100]!r} is not an http(s) URL such as http://127.0.0.1:8000/v1")
    return url


def api_key(var: str | None) -> str | None:
    """The key in the environment variable `var` (None without one); UserError when the variable is not set."""
    if var is None:
        return None
    value = os.environ.get(var, "")
    if not value.strip():
        raise UserError(f"--api-key-env: the environment variable {var} is not set (export {var}=... first)")
    return value.strip()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _opener(url: str) -> urllib.request.OpenerDirector:
    host = urllib.parse.urlsplit(url).hostname or ""
    return urllib.request.build_opener(urllib.request.ProxyHandler({} if _is_loopback(host) else None))


def _server_message(body: bytes) -> str:
    """The server's error message from an OpenAI-style `{"error": {"message": ...}}` body, or the body's start."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message", err) if isinstance(err, dict) else err
        text = str(msg)
    except (json.JSONDecodeError, AttributeError):
        pass
    return " ".join(text.split())[:300] or "no message"


def _retry_after(value: str | None) -> float | None:
    try:
        return min(max(float(value), 0.0), MAX_WAIT_S) if value is not None else None
    except ValueError:
        return None


def check_reply(reply: Any) -> str:  # noqa: ANN401 - whatever the server sent
    """The answer text of a chat-completions reply; ValueError when the reply is not one."""
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("no choices[0].message.content") from None
    if not isinstance(content, str):
        raise ValueError("choices[0].message.content is not text")
    return content


def _post_once(ep: Endpoint, payload: bytes) -> dict:
    req = urllib.request.Request(ep.chat_url, data=payload, method="POST")
    req.add_header("Content-Type", "application/json")
    if ep.api_key:
        req.add_header("Authorization", f"Bearer {ep.api_key}")
    try:
        with _opener(ep.chat_url).open(req, timeout=ep.timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as err:
        msg = _server_message(err.read() or b"")
        if err.code == 429 or err.code >= 500:
            raise Retryable(f"HTTP {err.code}: {msg}", _retry_after(err.headers.get("Retry-After"))) from None
        raise UserError(
            f"--endpoint {ep.url}: the server refused the request (HTTP {err.code}: {msg})"
        ) from None
    except TimeoutError:
        raise Retryable(f"no answer within {ep.timeout:g} s (--timeout)") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, TimeoutError):
            raise Retryable(f"no answer within {ep.timeout:g} s (--timeout)") from None
        raise UserError(f"--endpoint {ep.url}: cannot reach the server ({err.reason})") from None
    except (ConnectionError, OSError) as err:  # the connection dropped mid-answer
        raise Retryable(f"connection lost ({err})") from None
    try:
        reply = json.loads(body)
        check_reply(reply)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise Retryable(f"malformed reply ({err}): {body[:80]!r}") from None
    return reply


def chat(ep: Endpoint, messages: list[dict[str, str]], *, max_tokens: int, logprobs: bool) -> dict:
    """The server's reply (parsed JSON with choices[0].message.content) to one chat-completions request, after up
    to `ep.retries` retries; UserError (one line) when it cannot be had."""
    body: dict[str, Any] = {
        "model": ep.model,
        "messages": messages,
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    if logprobs:
        body.update(logprobs=True, top_logprobs=5)
    payload = json.dumps(body).encode("utf-8")
    for attempt in range(ep.retries + 1):
        try:
            return _post_once(ep, payload)
        except Retryable as err:
            if attempt == ep.retries:
                raise UserError(
                    f"--endpoint {ep.url}: gave up after {ep.retries + 1} tries (last: {err}); rerun to resume"
                ) from None
            wait = err.wait if err.wait is not None else min(ep.backoff * 2**attempt, MAX_WAIT_S)
            log.debug("retrying in %.1f s: %s", wait, err)
            time.sleep(wait)
    raise AssertionError("unreachable")


def cache_key(model: str, prompt_version: str, messages: list[dict[str, str]]) -> str:
    """SHA-256 of the model, the prompt version and the messages (the request's identity in the cache)."""
    text = json.dumps([model, prompt_version, messages], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ReplyCache:
    """`RUN/features/llm.jsonl`: every answer by key (module docstring). Safe to `put` from several threads."""

    def __init__(self, run: Path) -> None:
        self.run = Path(run)
        self.path = self.run / "features" / CACHE_FILE
        self._lock = threading.Lock()
        self.replies: dict[str, dict] = self._read()

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"{self.path}: unreadable ({err})") from None
        out: dict[str, dict] = {}
        for n, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
                check_reply(rec["reply"])
                out[str(rec["key"])] = rec["reply"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                if line.strip():  # what a kill mid-write leaves; the answer is asked for again
                    log.warning("%s:%d: skipping a cached answer cut short", self.path, n)
        return out

    def get(self, key: str) -> dict | None:
        return self.replies.get(key)

    def put(self, key: str, model: str, prompt_version: str, messages: list, reply: dict) -> None:
        """Record an answer in memory and append it to the file at once."""
        rec = {"key": key, "model": model, "prompt_version": prompt_version, "messages": messages,
               "reply": reply, "when": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock, store_lock(self.run):
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = (
                        b"\n" + line
                    )  # a line cut short by a kill stays on its own line (skipped when read)
                os.write(fd, line)
            finally:
                os.close(fd)
            self.replies[key] = reply
