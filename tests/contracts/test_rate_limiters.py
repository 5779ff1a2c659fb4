"""Contract tests of ``RateLimiter`` and ``QuotaCounters``: the in-process implementations and the Redis ones
(a real Redis on :6379, each test under its own key prefix), the same bucket arithmetic against an injected
clock, and atomicity under concurrent requests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis

from ragserve.security.ratelimit.memory import MemoryQuotaCounters, MemoryRateLimiter
from ragserve.security.ratelimit.protocol import QuotaCounters, RateLimiter
from ragserve.security.ratelimit.redis import RedisQuotaCounters, RedisRateLimiter, connect

REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def prefix() -> Any:
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


Backend = tuple[RateLimiter, QuotaCounters]


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Callable[[Clock], Backend]]:
    clients = []

    def make(clock: Clock) -> Backend:
        if request.param == "memory":
            return MemoryRateLimiter(clock), MemoryQuotaCounters(clock)
        client = connect(REDIS_URL, timeout_seconds=2.0)
        clients.append(client)
        return RedisRateLimiter(client, prefix, clock), RedisQuotaCounters(client, prefix)

    yield make
    for client in clients:
        await client.aclose()


class TestRateLimiter:
    async def test_a_burst_then_one_request_per_interval(self, backend: Callable[[Clock], Backend]) -> None:
        clock = Clock(1_700_000_000.0)
        limiter, _ = backend(clock)
        decisions = [await limiter.take("key:a", 4.0, 5) for _ in range(6)]
        assert [d.allowed for d in decisions] == [True] * 5 + [False]
        assert [round(d.remaining, 3) for d in decisions[:5]] == [4, 3, 2, 1, 0]
        assert decisions[5].retry_after_seconds == pytest.approx(0.25, abs=1e-4)
        clock.now += 0.1
        assert (await limiter.take("key:a", 4.0, 5)).retry_after_seconds == pytest.approx(0.15, abs=1e-4)
        clock.now += 0.15
        assert (await limiter.take("key:a", 4.0, 5)).allowed
        assert not (await limiter.take("key:a", 4.0, 5)).allowed

    async def test_refill_stops_at_the_burst_and_keys_are_separate(self, backend: Callable[[Clock], Backend]) -> None:
        clock = Clock(1_700_000_000.0)
        limiter, _ = backend(clock)
        assert (await limiter.take("key:a", 1.0, 3)).allowed
        clock.now += 3600.0
        assert [(await limiter.take("key:a", 1.0, 3)).allowed for _ in range(4)] == [True, True, True, False]
        assert (await limiter.take("ip:a", 1.0, 3)).allowed

    async def test_concurrent_requests_never_share_a_token(self, backend: Callable[[Clock], Backend]) -> None:
        limiter, _ = backend(Clock(1_700_000_000.0))
        decisions = await asyncio.gather(*(limiter.take("key:busy", 0.5, 10) for _ in range(60)))
        assert sum(d.allowed for d in decisions) == 10


class TestQuotaCounters:
    async def test_add_refuses_what_would_go_over(self, backend: Callable[[Clock], Backend]) -> None:
        clock = Clock(time.time())
        _, counters = backend(clock)
        expires = clock.now + 3600
        assert await counters.get("requests:d:acme") == 0
        assert (await counters.add("requests:d:acme", 6, 10, expires)).total == 6
        refused = await counters.add("requests:d:acme", 5, 10, expires)
        assert not refused.added
        assert refused.total == 6
        assert (await counters.add("requests:d:acme", 4, 10, expires)).added
        assert (await counters.add("requests:d:acme", 100, None, expires)).total == 110
        assert await counters.get("requests:d:acme") == 110
        assert await counters.get("requests:d:other") == 0

    async def test_concurrent_adds_stop_exactly_at_the_limit(self, backend: Callable[[Clock], Backend]) -> None:
        clock = Clock(time.time())
        _, counters = backend(clock)
        results = await asyncio.gather(*(counters.add("q", 1, 25, clock.now + 60) for _ in range(40)))
        assert sum(r.added for r in results) == 25
        assert await counters.get("q") == 25


async def test_redis_buckets_use_redis_time_when_no_clock_is_given(prefix: str) -> None:
    client = connect(REDIS_URL, timeout_seconds=2.0)
    try:
        limiter = RedisRateLimiter(client, prefix)
        decisions = [await limiter.take("key:t", 0.001, 2) for _ in range(3)]
        assert [d.allowed for d in decisions] == [True, True, False]
        assert decisions[2].retry_after_seconds == pytest.approx(1000.0, rel=0.01)
        # The bucket lives under the configured prefix and expires once it would be full again.
        ttl = await client.pttl(f"{prefix}:ratelimit:key:t")
        assert 2_000_000 - 10_000 < ttl <= 2_001_000
    finally:
        await client.aclose()


async def test_redis_counters_expire_at_the_time_given(prefix: str) -> None:
    client = connect(REDIS_URL, timeout_seconds=2.0)
    try:
        counters = RedisQuotaCounters(client, prefix)
        expires = time.time() + 7200
        await counters.add("llm_tokens:d:acme", 5, None, expires)
        assert abs(await client.ttl(f"{prefix}:quota:llm_tokens:d:acme") - 7200) <= 2
    finally:
        await client.aclose()
