"""Run ``ragserve serve`` as a real child process for tests that kill and restart it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    data_dir: Path, port: int, model_cache: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``ragserve serve`` as a child process, ready when this returns; ``env`` adds settings (e.g. LLM providers)."""
    full_env = {
        **os.environ,
        "RAGSERVE_DATA_DIR": str(data_dir),
        "RAGSERVE_EMBEDDING__CACHE_DIR": str(model_cache),
        "RAGSERVE_SERVER__LOG_LEVEL": "warning",
        **(env or {}),
    }
    command = [sys.executable, "-m", "ragserve.cli", "serve", "--port", str(port)]
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    wait_ready(f"http://127.0.0.1:{port}", process)
    return process


def wait_ready(base_url: str, process: subprocess.Popen[bytes], timeout_seconds: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become ready")
