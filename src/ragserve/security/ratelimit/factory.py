"""The rate limits and quotas the settings ask for, built once in the app's lifespan."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ragserve.security.ratelimit.memory import MemoryQuotaCounters, MemoryRateLimiter
from ragserve.security.ratelimit.policy import FailOpen, RateLimits, TenantQuotas
from ragserve.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Limits:
    """The buckets and quotas of one app, and how to close their backend."""

    rates: RateLimits
    quotas: TenantQuotas
    close: Callable[[], Awaitable[None]]


def limits_enabled(settings: Settings) -> bool:
    """As asked; by default on whenever the server listens beyond loopback (as authentication is)."""
    if settings.rate_limit.enabled is not None:
        return settings.rate_limit.enabled
    host = settings.server.host
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"


def build_limits(settings: Settings) -> Limits | None:
    """In Redis when ``redis.url`` is set (shared by replicas), in this process otherwise; None when off."""
    if not limits_enabled(settings):
        s = settings.rate_limit
        if any(q is not None for q in (s.requests_per_day, s.llm_tokens_per_day, s.ingest_bytes_per_day)):
            logger.warning("rate limits are off (RAGSERVE_RATE_LIMIT__ENABLED): the daily quotas set are not enforced")
        return None
    s, guard = settings.rate_limit, FailOpen()
    logger.info("rate limits and quotas on, kept in %s", "Redis" if settings.redis.url is not None else "this process")
    if settings.redis.url is not None:
        from ragserve.security.ratelimit.redis import RedisQuotaCounters, RedisRateLimiter, connect

        client = connect(settings.redis.url.get_secret_value(), s.redis_timeout_seconds)
        prefix = settings.redis.key_prefix
        return Limits(
            RateLimits(s, RedisRateLimiter(client, prefix), guard),
            TenantQuotas(s, RedisQuotaCounters(client, prefix), guard),
            client.aclose,
        )

    async def nothing() -> None:
        return None

    return Limits(
        RateLimits(s, MemoryRateLimiter(max_buckets=s.max_local_buckets), guard),
        TenantQuotas(s, MemoryQuotaCounters(), guard),
        nothing,
    )
