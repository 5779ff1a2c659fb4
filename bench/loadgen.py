"""What ``scale.py`` and ``soak.py`` share: a real ``ragserve serve`` process, closed-loop HTTP clients, the
server's memory, and the raw model's query-embedding floor."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.evaluation import percentile


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def rss_mb(pid: int) -> dict[str, float]:
    """The process's resident memory now and at its peak (``VmHWM``), in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return {"rss_mb": round(fields["VmRSS"], 1), "peak_rss_mb": round(fields["VmHWM"], 1)}


class Server:
    """``ragserve serve`` on a free port with ``env`` added to this process's environment. ``launcher`` runs the
    CLI instead of ``-m ragserve.cli`` (e.g. ``memory_probe.py OUT.jsonl --``), with ``serve --port N`` after it."""

    def __init__(
        self,
        env: dict[str, str],
        ready_timeout_seconds: float = 900.0,
        launcher: Sequence[str] = ("-m", "ragserve.cli"),
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, *launcher, "serve", "--port", str(self.port)],
            env={**os.environ, "RAGSERVE_SERVER__LOG_LEVEL": "warning", **env},
        )
        deadline = time.monotonic() + ready_timeout_seconds
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode} before it was ready")
            try:
                if httpx.get(f"{self.base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server was not ready in time")
            time.sleep(0.5)
        self.ready_seconds = time.perf_counter() - started

    def memory(self) -> dict[str, float]:
        return rss_mb(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class Request:
    """One kind of request the clients send: ``body(i)`` is the JSON body of the i-th request of this kind."""

    name: str
    path: str
    body: Callable[[int], dict[str, Any]]
    share: int = 1  # requests of this kind per round of all kinds


@dataclass
class LoadResult:
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # (seconds since the start when the response came, kind, latency in ms, failed), in completion order
    events: list[tuple[float, str, float, bool]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seconds": round(self.seconds, 1)}
        for name, values in self.latencies_ms.items():
            out[name] = {
                "requests": len(values),
                "errors": self.errors.get(name, 0),
                "per_s": round(len(values) / self.seconds, 2) if self.seconds else 0.0,
                "p50_ms": round(percentile(values, 50), 2),
                "p95_ms": round(percentile(values, 95), 2),
                "p99_ms": round(percentile(values, 99), 2),
                "max_ms": round(max(values), 2) if values else 0.0,
            }
        if self.error_samples:
            out["error_samples"] = self.error_samples[:5]
        return out


async def closed_loop(
    base: str,
    kinds: Sequence[Request],
    clients: int,
    seconds: float,
    on_tick: Callable[[float], None] | None = None,
    tick_seconds: float = 5.0,
    timeout_seconds: float = 30.0,
) -> LoadResult:
    """``clients`` clients, each sending its next request as soon as the last one was answered, for
    ``seconds``. Every response other than 200 counts as an error, and so does a transport error or a
    timeout (``timeout_seconds``). ``on_tick(elapsed)`` is called every ``tick_seconds`` (e.g. to sample memory)."""
    schedule = [kind for kind in kinds for _ in range(kind.share)]
    result = LoadResult({k.name: [] for k in kinds}, {k.name: 0 for k in kinds})
    deadline = time.perf_counter() + seconds

    async def client_loop(n: int) -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=base, timeout=timeout_seconds, limits=limits) as client:
            sent = 0
            while time.perf_counter() < deadline:
                # Each client cycles through the schedule; request bodies differ across clients.
                kind = schedule[(n + sent) % len(schedule)]
                started = time.perf_counter()
                try:
                    response = await client.post(kind.path, json=kind.body(n + sent * clients))
                    failed = response.status_code != 200
                    detail = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    failed, detail = True, f"{type(exc).__name__}: {exc}"
                now = time.perf_counter()
                result.latencies_ms[kind.name].append((now - started) * 1000)
                result.events.append((now - begun, kind.name, (now - started) * 1000, failed))
                if failed:
                    result.errors[kind.name] += 1
                    if len(result.error_samples) < 20:
                        result.error_samples.append(f"{kind.name}: {detail}")
                sent += 1

    async def ticker() -> None:
        while time.perf_counter() < deadline:
            await asyncio.sleep(tick_seconds)
            if on_tick is not None:
                on_tick(time.perf_counter() - begun)

    begun = time.perf_counter()
    tasks = [asyncio.create_task(client_loop(n)) for n in range(clients)]
    tick = asyncio.create_task(ticker())
    await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - begun
    tick.cancel()
    return result


def search_request(queries: Sequence[str], collection: str, mode: str | None, k: int = 10) -> Request:
    def body(i: int) -> dict[str, Any]:
        request: dict[str, Any] = {"query": queries[i % len(queries)], "collection": collection, "k": k}
        if mode is not None:
            request["mode"] = mode
        return request

    return Request(f"search_{mode or 'default'}", "/v1/search", body)


def query_embedding_floor(model: OnnxEmbedder, queries: Sequence[str], batch: int) -> dict[str, float]:
    """The raw model on these queries: one at a time (latency) and ``batch`` at a time (throughput)."""
    model.embed(list(queries[:batch]), kind="query")  # warm-up: the first runs allocate and plan
    single = []
    for query in queries:
        started = time.perf_counter()
        model.embed([query], kind="query")
        single.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    for i in range(0, len(queries), batch):
        model.embed(list(queries[i : i + batch]), kind="query")
    batched_seconds = time.perf_counter() - started
    return {
        "queries": len(queries),
        "single_p50_ms": round(percentile(single, 50), 2),
        "single_p95_ms": round(percentile(single, 95), 2),
        "single_p99_ms": round(percentile(single, 99), 2),
        "single_per_s": round(len(single) / (sum(single) / 1000), 1),
        "batch_size": batch,
        "batched_per_s": round(len(queries) / batched_seconds, 1),
    }
