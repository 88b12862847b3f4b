"""A small OpenAI-compatible chat-completions server for tests, on 127.0.0.1 in a thread, answering deterministically.

It explains a latent with the tokens marked `<<...>>` in its examples (the three most frequent, quoted) and detects by
keyword: a text's marked token is one of the explanation's quoted tokens -> "1". With `logprobs` it returns the
top log-probabilities of "1" and "0" when asked (0.9 / 0.1 on a keyword, 0.2 / 0.8 otherwise); without, it ignores
the request for them. It can misbehave on purpose: answer the first requests with HTTP errors or a malformed body
(`fail`), stall on the first request (`stall_first_s`), refuse any model but its own (404 with a message, as vLLM
does), or die for good after answering `die_after` requests. Every request is recorded (`requests`), and every
request whose answer reached the client (`answered`).
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MARKED = re.compile(r"<<(.+?)>>")
QUOTED = re.compile(r"'([^']*)'")


def explain_answer(user: str) -> str:
    counts = Counter(m for m in MARKED.findall(user))
    top = [t for t, _ in counts.most_common(3)]
    return "These examples share their marked tokens.\n[EXPLANATION]: the tokens " + ", ".join(
        f"'{t}'" for t in top
    )


def detect_probability(user: str) -> float:
    expl = user.split("\nText: ", 1)[0]
    text = user.split("\nText: ", 1)[1]
    marked = MARKED.findall(text)
    return 0.9 if marked and marked[-1] in QUOTED.findall(expl) else 0.2


class ChatServer:
    """Start with `with ChatServer(...) as srv:`; `srv.url` is the base URL (`http://127.0.0.1:PORT/v1`)."""

    def __init__(
        self,
        *,
        model: str = "fake-llm",
        logprobs: bool = True,
        fail: tuple[int | str, ...] = (),
        stall_first_s: float = 0.0,
        die_after: int | None = None,
    ) -> None:
        self.model, self.logprobs, self.stall_first_s, self.die_after = (
            model,
            logprobs,
            stall_first_s,
            die_after,
        )
        self.fail = list(fail)
        self.requests: list[dict[str, Any]] = []
        self.answered: list[dict[str, Any]] = []
        self._reserved = 0  # requests let through (answered or about to be), for `die_after`
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reply(self, body: dict[str, Any]) -> tuple[int, bytes, float]:
        """(status, body, seconds to stall) for one request."""
        with self._lock:
            n = len(self.requests)
            self.requests.append(body)
            failure = self.fail.pop(0) if self.fail else None
        stall = self.stall_first_s if n == 0 else 0.0
        if failure == "malformed":
            return 200, b"{this is not json", stall
        if isinstance(failure, int):
            return failure, json.dumps({"error": {"message": f"planned failure {failure}"}}).encode(), stall
        if body.get("model") != self.model:
            msg = f"The model `{body.get('model')}` does not exist."
            return 404, json.dumps({"error": {"message": msg, "type": "NotFoundError"}}).encode(), stall
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        if "[EXPLANATION]" in system:
            content = explain_answer(user)
        else:
            p = detect_probability(user)
            content = "1" if p >= 0.5 else "0"
            if self.logprobs and body.get("logprobs"):
                top = [{"token": "1", "logprob": math.log(p)}, {"token": "0", "logprob": math.log(1 - p)}]
                choice["logprobs"] = {"content": [{"token": content, "logprob": 0.0, "top_logprobs": top}]}
        choice["message"] = {"role": "assistant", "content": content}
        return 200, json.dumps({"id": "x", "object": "chat.completion", "choices": [choice]}).encode(), stall

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with (
                    owner._lock
                ):  # concurrent requests: reserve an answer, so no more than die_after are given
                    if owner.die_after is not None and owner._reserved >= owner.die_after:
                        self.close_connection = True
                        return  # dead: the connection closes without an answer
                    owner._reserved += 1
                owner.headers.append(dict(self.headers))
                status, data, stall = owner.reply(body)
                if stall:
                    threading.Event().wait(stall)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up waiting (its timeout): not answered
                if status == 200 and b"choices" in data:
                    with owner._lock:
                        owner.answered.append(body)
                if owner.die_after is not None and len(owner.answered) >= owner.die_after:
                    threading.Thread(target=owner.stop, daemon=True).start()

            def log_message(self, *args: object) -> None:
                pass

        return Handler
