"""A real OpenAI-compatible upstream for tests: ``python -m llama_cpp.server`` with the packaged Gemma GGUF,
and a fault-injection proxy in front of it that the tests steer (refuse, stall, 429, 500, cut a stream)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ragserve.llm.local import packaged_model_path
from tests.integration.server import free_port


@dataclass
class LlamaServer:
    base_url: str  # ends in /v1
    process: subprocess.Popen[bytes]
    model_path: Path


@contextlib.contextmanager
def llama_server(cache_dir: Path, log: Path) -> Iterator[LlamaServer]:
    """Start the llama.cpp server on a free port; fails (never skips) when llama-cpp-python is missing."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise AssertionError("llama-cpp-python is not installed: run scripts/test.sh (it installs ragserve[local])")
    model = packaged_model_path(cache_dir)
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--chat_format", "gemma",
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "2",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise AssertionError(f"llama_cpp.server exited with {process.returncode}: see {log}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/models", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError("llama_cpp.server did not start in 120 s")
            time.sleep(0.1)
        yield LlamaServer(base, process, model)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class ProxyLog:
    requests: int = 0
    faults: list[str] = field(default_factory=list)
    client_gone_early: int = 0  # downstream closed while the upstream was still answering


class FaultProxy:
    """An HTTP/1.1 proxy to ``upstream`` (host, port), one request per connection, in its own thread.

    ``mode`` applies to every request and ``queue`` holds one-shot faults taken first: ``pass``, ``refuse``
    (stop listening), ``reset`` (close the connection at once), ``stall`` (never answer), ``429``, ``500``,
    ``cut`` (forward the response but close after ``cut_after_bytes`` of it)."""

    def __init__(self, upstream_port: int, cut_after_bytes: int = 700, retry_after: str = "0") -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.mode = "pass"
        self.queue: list[str] = []
        self.cut_after_bytes = cut_after_bytes
        self.retry_after = retry_after
        self.log = ProxyLog()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def set(self, mode: str, *queue: str) -> None:
        """Switch the fault mode (``refuse`` stops listening; any other mode listens again)."""
        self.queue = list(queue)
        self.mode = mode
        self._call(self._close_listener() if mode == "refuse" else self._listen())

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._track, "127.0.0.1", self.port, reuse_address=True)

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_listener()

    async def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        lines = head.decode("latin-1").split("\r\n")
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        body = await reader.readexactly(length)
        self.log.requests += 1
        mode = self.queue.pop(0) if self.queue else self.mode
        self.log.faults.append(mode)
        if mode == "reset":
            return
        if mode == "stall":
            await asyncio.sleep(3600)
        if mode in ("429", "500"):
            extra = f"retry-after: {self.retry_after}\r\n" if mode == "429" else ""
            message = b'{"error": {"message": "injected fault"}}'
            writer.write(
                f"HTTP/1.1 {mode} Fault\r\ncontent-type: application/json\r\ncontent-length: {len(message)}\r\n"
                f"{extra}connection: close\r\n\r\n".encode()
                + message
            )
            await writer.drain()
            return
        await self._forward(head, body, reader, writer, cut=mode == "cut")

    async def _forward(
        self, head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cut: bool
    ) -> None:
        kept = [h for h in head.decode("latin-1").split("\r\n") if h and not h.lower().startswith("connection:")]
        request = ("\r\n".join(kept) + "\r\nconnection: close\r\n\r\n").encode("latin-1") + body
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        client_gone = asyncio.ensure_future(reader.read(1))  # EOF here: the client went away
        try:
            up_writer.write(request)
            await up_writer.drain()
            sent = 0
            while True:
                chunk = asyncio.ensure_future(up_reader.read(4096))
                done, _ = await asyncio.wait({chunk, client_gone}, return_when=asyncio.FIRST_COMPLETED)
                if client_gone in done:
                    chunk.cancel()
                    self.log.client_gone_early += 1
                    return
                data = chunk.result()
                if not data:
                    return
                if cut and sent + len(data) > self.cut_after_bytes:
                    writer.write(data[: self.cut_after_bytes - sent])
                    await writer.drain()
                    return
                writer.write(data)
                await writer.drain()
                sent += len(data)
        finally:
            client_gone.cancel()
            up_writer.close()
            with contextlib.suppress(ConnectionError):
                await up_writer.wait_closed()


def dead_port() -> int:
    """A port nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
