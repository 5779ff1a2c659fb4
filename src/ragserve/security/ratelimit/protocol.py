"""The seams of rate limiting: token buckets and expiring counters, each in this process or in Redis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BucketDecision:
    """One request against a token bucket: let through or not, the tokens left after it, and (when refused)
    the seconds until a token is back."""

    allowed: bool
    remaining: float
    retry_after_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class CounterResult:
    """A counter after an ``add``: whether the amount was added, and the counter's total."""

    added: bool
    total: int


class RateLimiter(Protocol):
    """Token buckets by name. A bucket holds at most ``burst`` tokens, refills at ``rate_per_second`` and starts
    full; each request takes one token. Implementations are safe to share by concurrent requests."""

    async def take(self, key: str, rate_per_second: float, burst: int) -> BucketDecision:
        """Take one token from ``key``'s bucket if it has one. Raises ``RateLimitBackendError``."""
        ...


class QuotaCounters(Protocol):
    """Integer counters by name that disappear at ``expires_at`` (seconds since the epoch)."""

    async def add(self, key: str, amount: int, limit: int | None, expires_at: float) -> CounterResult:
        """Add ``amount`` unless the total would then exceed ``limit`` (None: always add), atomically.
        Raises ``RateLimitBackendError``."""
        ...

    async def get(self, key: str) -> int:
        """The counter's total, 0 when it does not exist. Raises ``RateLimitBackendError``."""
        ...
