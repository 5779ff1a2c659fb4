"""Token buckets and quota counters in Redis, shared by every replica.

A bucket is the hash ``<prefix>:ratelimit:<kind>:<id>`` (``tokens``, ``ts``), updated by one Lua script per
request: the refill, the take and the write are atomic, so two replicas never spend the same token. The time
is Redis's own ``TIME``, one clock for every replica (tests pass their own instead). A bucket expires once it
would be full again. A quota counter is ``<prefix>:quota:<name>:<day>:<tenant>``, added to by a script that
refuses an amount that would go over the limit; it expires after its day.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ragserve.errors import RateLimitBackendError
from ragserve.security.ratelimit.protocol import BucketDecision, CounterResult

T = TypeVar("T")

_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[3])
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
if now > ts then
  tokens = tokens + (now - ts) * rate
  ts = now
end
if tokens > burst then tokens = burst end
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.6f', ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, string.format('%.6f', tokens), string.format('%.6f', wait)}
"""

_ADD = """
local total = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if ARGV[2] ~= '' and total + amount > tonumber(ARGV[2]) then return {0, total} end
total = redis.call('INCRBY', KEYS[1], amount)
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return {1, total}
"""


def connect(url: str, timeout_seconds: float) -> aioredis.Redis:
    """An asyncio client that gives up after ``timeout_seconds`` and never retries: a slow Redis must cost a
    request little, since the check then lets it through anyway."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )


async def _converted(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except (RedisError, OSError) as exc:
        raise RateLimitBackendError(f"Redis failed: {type(exc).__name__}: {exc}") from exc


class RedisRateLimiter:
    """Implements ``RateLimiter`` in Redis. ``clock`` (seconds) replaces Redis's ``TIME`` in tests; every
    caller of one bucket must use the same clock."""

    def __init__(self, client: aioredis.Redis, prefix: str, clock: Callable[[], float] | None = None) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._take = client.register_script(_TAKE)

    async def take(self, key: str, rate_per_second: float, burst: int) -> BucketDecision:
        now = "" if self._clock is None else repr(self._clock())
        keys = [f"{self._prefix}:ratelimit:{key}"]
        args: list[Any] = [repr(rate_per_second), burst, now]
        allowed, remaining, wait = await _converted(lambda: self._take(keys=keys, args=args))
        return BucketDecision(bool(allowed), float(remaining), float(wait))


class RedisQuotaCounters:
    """Implements ``QuotaCounters`` in Redis."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._add = client.register_script(_ADD)

    async def add(self, key: str, amount: int, limit: int | None, expires_at: float) -> CounterResult:
        keys = [f"{self._prefix}:quota:{key}"]
        args: list[Any] = [amount, "" if limit is None else limit, int(expires_at)]
        added, total = await _converted(lambda: self._add(keys=keys, args=args))
        return CounterResult(bool(added), int(total))

    async def get(self, key: str) -> int:
        value = await _converted(lambda: self._client.get(f"{self._prefix}:quota:{key}"))
        return 0 if value is None else int(value)
