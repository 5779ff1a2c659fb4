"""Egress limits per provider: at most ``max_concurrency`` requests in flight and a token bucket of
``tokens_per_minute``, so that ragserve never pushes a provider over the quota it pays for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from ragserve.errors import LLMCircuitOpenError


class TokenBucket:
    """``capacity`` tokens refilled continuously at ``capacity`` per minute. ``take`` may drive the level
    negative (a request larger than the bucket still goes out once it is full); later requests then wait."""

    def __init__(self, tokens_per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(tokens_per_minute)
        self._rate_per_second = tokens_per_minute / 60.0
        self._level = self._capacity
        self._clock = clock
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self._capacity, self._level + (now - self._updated) * self._rate_per_second)
        self._updated = now

    def wait_seconds(self, tokens: int) -> float:
        """Seconds until ``tokens`` (capped at the capacity) are available; 0 when they are now."""
        self._refill()
        missing = min(float(tokens), self._capacity) - self._level
        return max(0.0, missing / self._rate_per_second)

    def take(self, tokens: int) -> None:
        self._refill()
        self._level -= tokens

    def give_back(self, tokens: int) -> None:
        """Return an over-estimate once the real usage is known (a negative value charges more)."""
        self._refill()
        self._level = min(self._capacity, self._level + tokens)


class EgressLimiter:
    """Admission to one provider. ``acquire(tokens, max_wait_seconds)`` waits for a concurrency slot and for
    the bucket, but never longer than ``max_wait_seconds``: past that it raises ``LLMCircuitOpenError`` so
    that the gateway moves on to the next provider instead of queueing behind a saturated one."""

    def __init__(self, provider: str, max_concurrency: int, tokens_per_minute: int | None) -> None:
        self._provider = provider
        self._slots = asyncio.Semaphore(max_concurrency)
        self.bucket = TokenBucket(tokens_per_minute) if tokens_per_minute else None

    @asynccontextmanager
    async def acquire(self, tokens: int, max_wait_seconds: float) -> AsyncIterator[None]:
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=max(max_wait_seconds, 0.0))
        except TimeoutError:
            raise LLMCircuitOpenError(f"{self._provider}: all concurrency slots busy") from None
        try:
            if self.bucket is not None:
                wait = self.bucket.wait_seconds(tokens)
                if wait > max_wait_seconds:
                    raise LLMCircuitOpenError(f"{self._provider}: tokens-per-minute budget spent for {wait:.1f} s")
                if wait > 0:
                    await asyncio.sleep(wait)
                self.bucket.take(tokens)
            yield
        finally:
            self._slots.release()
