"""What the rate-limit settings ask of the backends: which bucket a request draws from, which quota it is
charged to, and what a refusal says. A failing backend lets requests through (fail open): a Redis outage must
not take the API down with it.

Quotas count per tenant per UTC day, the day read from this replica's clock. The requests and ingested-bytes
quotas refuse what would go over them; the LLM token quota is charged after the tokens are spent (their number
is known only then) and refuses requests once a tenant is over it.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from ragserve.domain import ANONYMOUS, Principal
from ragserve.errors import QuotaExceededError, RateLimitBackendError, RateLimitedError
from ragserve.observability.metrics import RATE_LIMIT_FAIL_OPEN, RATE_LIMITED
from ragserve.security.ratelimit.protocol import QuotaCounters, RateLimiter
from ragserve.settings_security import RateLimitSettings

logger = logging.getLogger(__name__)
T = TypeVar("T")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_UNITS = {
    "requests": "requests",
    "llm_tokens": "LLM tokens",
    "ingest_bytes": "bytes ingested",
    "stored_chunks": "stored chunks",
}


class FailOpen:
    """Runs the checks' backend calls. A ``RateLimitBackendError`` lets the request through: it is counted in
    ``ragserve_rate_limit_fail_open_total{check}``, logged at most every ``log_interval_seconds``, and the
    backend is left alone for ``pause_seconds``, so that an outage does not cost every request a timeout."""

    def __init__(
        self,
        pause_seconds: float = 1.0,
        log_interval_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pause_seconds = pause_seconds
        self._log_interval_seconds = log_interval_seconds
        self._clock = clock
        self._paused_until = float("-inf")
        self._next_log = float("-inf")

    async def run(self, check: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """``call``'s result, or None when the check is skipped because the backend failed (now or just before)."""
        now = self._clock()
        if now < self._paused_until:
            RATE_LIMIT_FAIL_OPEN.labels(check=check).inc()
            return None
        try:
            return await call()
        except RateLimitBackendError as exc:
            self._paused_until = now + self._pause_seconds
            RATE_LIMIT_FAIL_OPEN.labels(check=check).inc()
            if now >= self._next_log:
                self._next_log = now + self._log_interval_seconds
                logger.warning("rate limits and quotas are not enforced: %s (letting requests through)", exc.message)
            return None


def _parse_ip(text: str | None) -> IPAddress | None:
    try:
        address = ipaddress.ip_address((text or "").strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_ip(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]) -> str:
    """Whose IP bucket a request draws from: the peer's address, or, while that is a trusted proxy, the
    address it forwarded for (``X-Forwarded-For`` read from the right). IPv6 clients count per /64, since
    one host often has the whole of one. A peer that is not an IP address (a Unix socket) is named as is."""
    current = _parse_ip(peer)
    if current is None:
        return peer or "unknown"
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not any(current in network for network in trusted):
            break
        forwarded = _parse_ip(hop)
        if forwarded is None:  # a garbled header: the last proxy we trust is the client we know
            break
        current = forwarded
    if isinstance(current, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((current, 64), strict=False))
    return str(current)


class RateLimits:
    """Token buckets per API key (or JWT subject) and per client IP, from ``RateLimitSettings``."""

    def __init__(self, settings: RateLimitSettings, limiter: RateLimiter, guard: FailOpen) -> None:
        self._settings = settings
        self._limiter = limiter
        self._guard = guard
        self.trusted_proxies: list[IPNetwork] = [
            ipaddress.ip_network(proxy, strict=False) for proxy in settings.trusted_proxies
        ]

    async def check_client(self, ip: str) -> None:
        """Raises ``RateLimitedError`` when the client IP's bucket is empty."""
        s = self._settings
        if s.per_ip_rate > 0:
            await self._take("ip", ip, s.per_ip_rate, s.per_ip_burst, f"client {ip}")

    async def check_principal(self, principal: Principal) -> None:
        """Raises ``RateLimitedError`` when the caller's bucket is empty. With authentication off every caller
        is the anonymous principal: they share no key bucket, only their IP buckets."""
        s = self._settings
        if s.per_key_rate > 0 and principal != ANONYMOUS:
            await self._take("key", principal.label, s.per_key_rate, s.per_key_burst, f"caller {principal.label}")

    async def _take(self, kind: str, name: str, rate: float, burst: int, who: str) -> None:
        decision = await self._guard.run(kind, lambda: self._limiter.take(f"{kind}:{name}", rate, burst))
        if decision is None or decision.allowed:
            return
        RATE_LIMITED.labels(kind=kind).inc()
        retry_after = max(1, math.ceil(decision.retry_after_seconds))
        raise RateLimitedError(
            f"{who} is over its limit of {rate:g} requests/s (burst {burst}); retry in {retry_after} s", retry_after
        )


class TenantQuotas:
    """Per-tenant daily quotas from ``RateLimitSettings`` (unset ones are unlimited). ``clock`` gives seconds
    since the epoch. Refusals raise ``QuotaExceededError`` naming the quota, retryable at the next UTC day."""

    def __init__(
        self,
        settings: RateLimitSettings,
        counters: QuotaCounters,
        guard: FailOpen,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._counters = counters
        self._guard = guard
        self._clock = clock

    @property
    def limits_llm_tokens(self) -> bool:
        return self._settings.llm_tokens_per_day is not None

    @property
    def limits_ingest_bytes(self) -> bool:
        return self._settings.ingest_bytes_per_day is not None

    @property
    def limits_stored_chunks(self) -> bool:
        return self._settings.stored_chunks is not None

    async def charge_request(self, tenant: str) -> None:
        """Count one request; raises when the tenant already made ``requests_per_day`` today."""
        if self._settings.requests_per_day is not None:
            await self._add("requests", tenant, 1, self._settings.requests_per_day)

    async def check_llm_tokens(self, tenant: str) -> None:
        """Raises when the tenant has spent ``llm_tokens_per_day`` or more today."""
        limit = self._settings.llm_tokens_per_day
        if limit is None:
            return
        day, _, retry_after = self._today()
        used = await self._guard.run("llm_tokens", lambda: self._counters.get(f"llm_tokens:{day}:{tenant}"))
        if used is not None and used >= limit:
            self._refuse("llm_tokens", tenant, limit, used, retry_after)

    async def charge_llm_tokens(self, tenant: str, tokens: int) -> None:
        """Add tokens spent (prompt and completion); never refuses, since they are spent already."""
        if self._settings.llm_tokens_per_day is not None and tokens > 0:
            await self._add("llm_tokens", tenant, tokens, None)

    async def charge_ingest_bytes(self, tenant: str, size: int) -> None:
        """Count ``size`` bytes about to be ingested; raises (and counts nothing) if they would take the
        tenant over ``ingest_bytes_per_day``."""
        if self._settings.ingest_bytes_per_day is not None:
            await self._add("ingest_bytes", tenant, size, self._settings.ingest_bytes_per_day)

    def check_stored_chunks(self, tenant: str, stored: int, adding: int) -> None:
        """Raises when ``adding`` chunks to the ``stored`` ones the tenant has would exceed ``stored_chunks``.
        The caller counts: this quota holds no counter. No Retry-After: only deleting documents frees room."""
        limit = self._settings.stored_chunks
        if limit is not None and stored + adding > limit:
            RATE_LIMITED.labels(kind="stored_chunks").inc()
            raise QuotaExceededError(
                f"tenant {tenant!r} would be over its quota stored_chunks: {stored} stored, {adding} more, "
                f"limit {limit}; delete documents to make room",
                "stored_chunks",
                None,
            )

    def _today(self) -> tuple[str, float, int]:
        """Today's name (UTC), when its counters may go (an hour after it, for replicas' clocks that run
        behind) and the whole seconds until it ends."""
        now = self._clock()
        today = datetime.fromtimestamp(now, UTC).date()
        midnight = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)
        return today.isoformat(), midnight.timestamp() + 3600, max(1, math.ceil(midnight.timestamp() - now))

    async def _add(self, name: str, tenant: str, amount: int, limit: int | None) -> None:
        day, expires_at, retry_after = self._today()
        key = f"{name}:{day}:{tenant}"
        result = await self._guard.run(name, lambda: self._counters.add(key, amount, limit, expires_at))
        if result is not None and not result.added and limit is not None:
            self._refuse(name, tenant, limit, result.total, retry_after, amount)

    @staticmethod
    def _refuse(name: str, tenant: str, limit: int, used: int, retry_after: int, adding: int = 0) -> None:
        RATE_LIMITED.labels(kind=name).inc()
        unit = _UNITS[name]
        more = f" and this request needs {adding} more" if adding > 1 else ""
        raise QuotaExceededError(
            f"tenant {tenant!r} is at its daily quota {name} of {limit} {unit} ({used} used today{more}); "
            f"it resets at 00:00 UTC, in {retry_after} s",
            name,
            retry_after,
        )
