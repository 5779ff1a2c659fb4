"""Per-key rate limits across replicas: two ``ragserve serve`` processes share one Redis, and several clients
drive one API key against both at more than the limit for a fixed time. The accepted rate should be the limit
N, not 2N (each server allowing N on its own), which is what the same run without Redis shows.

    python bench/rate_limit.py [--rate 20] [--burst 5] [--seconds 20] [--clients 8] [--offered 80]

Prints one JSON object: per backend (redis, then memory for contrast), requests accepted and refused, the
accepted rate after the first ``--warmup`` seconds (the burst is spent by then) and its ratio to N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from ragserve.security.auth import create_key
from ragserve.security.keys import hash_key
from ragserve.settings import Settings
from ragserve.settings_security import RateLimitSettings
from ragserve.stores.factory import open_key_store

PEPPER = "bench-pepper"
REDIS_URL = "redis://127.0.0.1:6379/0"
_QUANTILES = (("p50", 0.5), ("p99", 0.99))


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(data_dir: Path, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ragserve.cli", "serve", "--port", str(port)],
            env={**os.environ, "RAGSERVE_DATA_DIR": str(data_dir), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


def _shared_key(data_dirs: list[Path]) -> str:
    """One key written into each server's own database: they share nothing but Redis."""
    secret, record = "", None
    for data_dir in data_dirs:
        keys, close = open_key_store(Settings(data_dir=data_dir))
        try:
            if record is None:
                secret, record = create_key(keys, PEPPER.encode(), "bench", "bench", ["query"], None)
            else:
                keys.create_key(record, hash_key(secret, PEPPER.encode()))
        finally:
            close()
    return secret


Result = tuple[float, int, int, float]


async def _drive(apis: list[str], key: str, args: argparse.Namespace) -> list[Result]:
    """(seconds since start, server index, status, latency in seconds) of every request; each client paced to
    its share of ``--offered`` requests/s, alternating between the servers."""
    results: list[Result] = []
    interval = args.clients / args.offered
    start = time.monotonic()

    async def client(n: int, http: httpx.AsyncClient) -> None:
        i = n
        next_at = start + n * interval / args.clients
        while (now := time.monotonic()) < start + args.seconds:
            if now < next_at:
                await asyncio.sleep(next_at - now)
            next_at += interval
            server = i % len(apis)
            i += 1
            sent = time.monotonic()
            response = await http.get(f"{apis[server]}/v1/collections", headers={"authorization": f"Bearer {key}"})
            done = time.monotonic()
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) >= 1
            results.append((done - start, server, response.status_code, done - sent))

    limits = httpx.Limits(max_connections=args.clients * 2)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        await asyncio.gather(*(client(n, http) for n in range(args.clients)))
    return results


def _percentile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else 0.0


def _fail_open(api: str) -> float:
    """Checks this server let through unchecked because Redis failed or was slower than its timeout."""
    families = text_string_to_metric_families(httpx.get(f"{api}/metrics", timeout=10).text)
    return sum(s.value for f in families for s in f.samples if s.name == "ragserve_rate_limit_fail_open_total")


def _summary(results: list[Result], args: argparse.Namespace) -> dict[str, Any]:
    accepted = [r for r in results if r[2] == 200]
    steady = [r for r in accepted if r[0] >= args.warmup]
    steady_rps = len(steady) / (args.seconds - args.warmup)
    return {
        "requests": len(results),
        "accepted": len(accepted),
        "refused_429": sum(1 for r in results if r[2] == 429),
        "other_status": sorted({r[2] for r in results} - {200, 429}),
        "offered_rps": round(len(results) / args.seconds, 1),
        "accepted_per_server": [sum(1 for r in accepted if r[1] == s) for s in (0, 1)],
        "accepted_rps_after_warmup": round(steady_rps, 2),
        "ratio_to_limit": round(steady_rps / args.rate, 3),
        "latency_ms_accepted": {q: _percentile_ms([r[3] for r in accepted], p) for q, p in _QUANTILES},
        "latency_ms_refused": {q: _percentile_ms([r[3] for r in results if r[2] == 429], p) for q, p in _QUANTILES},
    }


def _run(backend: str, key_dirs: Path, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    env = {
        "RAGSERVE_EMBEDDING__CACHE_DIR": str(cache),
        "RAGSERVE_EMBEDDING__THREADS": "1",
        "RAGSERVE_SERVER__LOG_LEVEL": "warning",
        "RAGSERVE_AUTH__ENABLED": "true",
        "RAGSERVE_AUTH__KEY_PEPPER": PEPPER,
        "RAGSERVE_RATE_LIMIT__ENABLED": "true",
        "RAGSERVE_RATE_LIMIT__PER_KEY_RATE": str(args.rate),
        "RAGSERVE_RATE_LIMIT__PER_KEY_BURST": str(args.burst),
        "RAGSERVE_RATE_LIMIT__PER_IP_RATE": "0",  # every client here is 127.0.0.1
        "RAGSERVE_CACHE__ANSWERS": "false",
        "RAGSERVE_RATE_LIMIT__REDIS_TIMEOUT_SECONDS": str(args.redis_timeout),
    }
    if backend == "redis":
        env |= {"RAGSERVE_REDIS__URL": REDIS_URL, "RAGSERVE_REDIS__KEY_PREFIX": prefix}
    processes, apis, dirs = [], [], []
    try:
        for name in ("a", "b"):
            port, data_dir = _port(), key_dirs / f"{backend}-{name}"
            processes.append(_serve(data_dir, port, env, key_dirs / f"{backend}-{name}.log"))
            apis.append(f"http://127.0.0.1:{port}")
            dirs.append(data_dir)
        key = _shared_key(dirs)
        summary = _summary(asyncio.run(_drive(apis, key, args)), args)
        summary["fail_open_checks"] = sum(_fail_open(api) for api in apis)
        return summary
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        if backend == "redis":
            client = redis.Redis.from_url(REDIS_URL)
            stale = list(client.scan_iter(match=f"{prefix}:*"))
            if stale:
                client.delete(*stale)
            client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20.0, help="the per-key limit N, requests/s")
    parser.add_argument("--burst", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the clients drive requests")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds left out of the accepted rate")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--offered", type=float, default=80.0, help="requests/s of all clients together")
    parser.add_argument(
        "--redis-timeout",
        type=float,
        default=RateLimitSettings().redis_timeout_seconds,
        help="RAGSERVE_RATE_LIMIT__REDIS_TIMEOUT_SECONDS",
    )
    parser.add_argument("--backends", default="redis,memory", help="redis (shared), memory (per process)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ragserve-rate-limit-"))
    try:
        runs = {backend: _run(backend, work, args, work / "models") for backend in args.backends.split(",")}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "limit_rps_per_key": args.rate,
        "burst": args.burst,
        "servers": 2,
        "clients": args.clients,
        "seconds": args.seconds,
        "warmup_seconds": args.warmup,
        "redis_timeout_seconds": args.redis_timeout,
        "backends": runs,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
