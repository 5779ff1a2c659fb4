"""Token buckets and quota counters in this process: for one replica, or when there is no Redis."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from ragserve.security.ratelimit.protocol import BucketDecision, CounterResult


def refill(tokens: float, updated_at: float, now: float, rate_per_second: float, burst: int) -> float:
    """The tokens of a bucket at ``now`` that held ``tokens`` at ``updated_at``; a clock that went back adds
    nothing. ``redis.py`` does the same sum in Lua."""
    return min(float(burst), tokens + max(0.0, now - updated_at) * rate_per_second)


class MemoryRateLimiter:
    """Implements ``RateLimiter`` in a dict. ``clock`` gives seconds (monotonic by default; tests inject one).
    Beyond ``max_buckets`` the least recently used bucket is forgotten, which gives its key a full bucket
    again: a lenient error, and only under that many distinct keys."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_buckets: int = 100_000) -> None:
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key: (tokens, updated_at)

    async def take(self, key: str, rate_per_second: float, burst: int) -> BucketDecision:
        # No await in here: concurrent requests on the event loop cannot interleave within one take.
        now = self._clock()
        tokens, updated_at = self._buckets.pop(key, (float(burst), now))
        tokens = refill(tokens, updated_at, now, rate_per_second, burst)
        self._buckets[key] = (tokens - 1.0 if tokens >= 1.0 else tokens, max(now, updated_at))
        if len(self._buckets) > self._max_buckets:
            self._buckets.popitem(last=False)
        if tokens >= 1.0:
            return BucketDecision(True, tokens - 1.0)
        return BucketDecision(False, tokens, (1.0 - tokens) / rate_per_second)


class MemoryQuotaCounters:
    """Implements ``QuotaCounters`` in a dict; expired counters are dropped as new ones are made.
    ``clock`` gives seconds since the epoch."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counters: dict[str, tuple[int, float]] = {}  # key: (total, expires_at)

    def _current(self, key: str) -> int:
        total, expires_at = self._counters.get(key, (0, float("inf")))
        return total if expires_at > self._clock() else 0

    async def add(self, key: str, amount: int, limit: int | None, expires_at: float) -> CounterResult:
        total = self._current(key)
        if limit is not None and total + amount > limit:
            return CounterResult(False, total)
        if key not in self._counters:
            self._drop_expired()
        self._counters[key] = (total + amount, expires_at)
        return CounterResult(True, total + amount)

    async def get(self, key: str) -> int:
        return self._current(key)

    def _drop_expired(self) -> None:
        now = self._clock()
        for key in [k for k, (_, expires_at) in self._counters.items() if expires_at <= now]:
            del self._counters[key]
