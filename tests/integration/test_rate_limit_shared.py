"""Two real ``ragserve serve`` processes sharing Redis share each key's token bucket: with a burst of B, B
requests spread over both servers succeed and the next one is refused by either, while another key is not."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from ragserve.security.auth import create_key
from ragserve.security.keys import hash_key
from ragserve.settings import Settings
from ragserve.stores.factory import open_key_store
from tests.integration.server import free_port, start_server

pytestmark = pytest.mark.slow
REDIS_URL = "redis://127.0.0.1:6379/0"
PEPPER = "pepper-shared-by-both-servers"
BURST = 6


def same_key_in(data_dirs: list[Path], tenant: str) -> dict[str, str]:
    """One API key, written into each server's own SQLite database (the servers share only Redis)."""
    secret, record = "", None
    for data_dir in data_dirs:
        keys, close = open_key_store(Settings(data_dir=data_dir))
        try:
            if record is None:
                secret, record = create_key(keys, PEPPER.encode(), "shared", tenant, ["query"], None)
            else:
                keys.create_key(record, hash_key(secret, PEPPER.encode()))
        finally:
            close()
    return {"authorization": f"Bearer {secret}"}


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def servers(tmp_path: Path, model_cache: Path, prefix: str) -> Iterator[tuple[list[str], list[Path]]]:
    env = {
        "RAGSERVE_AUTH__ENABLED": "true",
        "RAGSERVE_AUTH__KEY_PEPPER": PEPPER,
        "RAGSERVE_REDIS__URL": REDIS_URL,
        "RAGSERVE_REDIS__KEY_PREFIX": prefix,
        "RAGSERVE_RATE_LIMIT__ENABLED": "true",
        "RAGSERVE_RATE_LIMIT__PER_KEY_RATE": "0.01",  # one token per 100 s: nothing refills during the test
        "RAGSERVE_RATE_LIMIT__PER_KEY_BURST": str(BURST),
        "RAGSERVE_RATE_LIMIT__PER_IP_RATE": "0",  # every client here is 127.0.0.1
        "RAGSERVE_EMBEDDING__THREADS": "1",
    }
    processes: list[subprocess.Popen[bytes]] = []
    urls, data_dirs = [], []
    try:
        for name in ("a", "b"):
            port, data_dir = free_port(), tmp_path / f"data-{name}"
            processes.append(start_server(data_dir, port, model_cache, tmp_path / f"api-{name}.log", env))
            urls.append(f"http://127.0.0.1:{port}")
            data_dirs.append(data_dir)
        yield urls, data_dirs
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def test_two_servers_sharing_redis_share_a_keys_bucket(servers: tuple[list[str], list[Path]], prefix: str) -> None:
    (api_a, api_b), data_dirs = servers
    key, other = same_key_in(data_dirs, "acme"), same_key_in(data_dirs, "acme")
    spread = [api_a, api_b] * (BURST // 2)
    assert [httpx.get(f"{api}/v1/collections", headers=key).status_code for api in spread] == [200] * BURST
    for api in (api_a, api_b):
        refused = httpx.get(f"{api}/v1/collections", headers=key)
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 100
        assert refused.json()["error"]["code"] == "rate_limited"
    assert [httpx.get(f"{api}/v1/collections", headers=other).status_code for api in (api_a, api_b)] == [200, 200]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert len(client.keys(f"{prefix}:ratelimit:key:*")) == 2  # one per key, under the configured prefix
    finally:
        client.close()
