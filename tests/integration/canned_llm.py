"""A small OpenAI-compatible upstream with canned replies, served over real HTTP in a thread: deterministic
where a test needs to know the model's words (the answer text, the judge's grade) or to hold a request open."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ragserve.llm.judge import JUDGE_SYSTEM_PROMPT


class CannedLLM:
    """``/v1/chat/completions`` answering ``answer`` (whole or streamed in words) and ``grade`` to the
    groundedness judge. While ``release`` is clear, requests wait for it; ``waiting`` counts them."""

    def __init__(self, answer: str, grade: str = "0.9") -> None:
        self.answer = answer
        self.grade = grade
        self.release = threading.Event()
        self.release.set()
        self.waiting = 0
        self.judged = 0
        self.authorizations: list[str] = []  # the Authorization header of each request
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> CannedLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def _reply(self, body: dict[str, Any]) -> str:
        if body["messages"][0]["content"] == JUDGE_SYSTEM_PROMPT:
            with self._lock:
                self.judged += 1
            return self.grade
        with self._lock:
            self.waiting += 1
        self.release.wait(timeout=30)
        with self._lock:
            self.waiting -= 1
        return self.answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                canned.authorizations.append(self.headers.get("authorization", ""))
                text = canned._reply(body)
                usage = {"prompt_tokens": 50, "completion_tokens": len(text.split())}
                if not body.get("stream"):
                    self._send(
                        "application/json", json.dumps({"choices": [{"message": {"content": text}}], "usage": usage})
                    )
                    return
                words = text.split(" ")
                chunks = [{"choices": [{"delta": {"content": w if i == 0 else " " + w}}]} for i, w in enumerate(words)]
                chunks.append({"choices": [], "usage": usage})
                events = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
                self._send("text/event-stream", events)

            def _send(self, content_type: str, text: str) -> None:
                data = text.encode()
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
