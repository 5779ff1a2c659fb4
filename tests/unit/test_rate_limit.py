"""Rate limits and quotas without a server: the in-process token bucket against an injected clock, the client
IP behind trusted proxies, the daily quotas at the end of a UTC day, failing open when the backend fails, and
the LLM gateway charging a request's tokens to the quota it bound."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client import REGISTRY

from ragserve.domain import ANONYMOUS, Principal
from ragserve.errors import QuotaExceededError, RateLimitBackendError, RateLimitedError
from ragserve.llm.breaker import CircuitBreaker
from ragserve.llm.egress import EgressLimiter
from ragserve.llm.gateway import LLMGateway, ProviderSlot, bind_token_charge
from ragserve.llm.llm import ChatMessage
from ragserve.llm.openai_compat import OpenAICompatLLM
from ragserve.security.ratelimit.memory import MemoryQuotaCounters, MemoryRateLimiter
from ragserve.security.ratelimit.policy import FailOpen, RateLimits, TenantQuotas, client_ip
from ragserve.security.ratelimit.protocol import BucketDecision, CounterResult
from ragserve.settings_llm import LLMRetrySettings
from ragserve.settings_security import RateLimitSettings

MESSAGES = [ChatMessage("user", "How many days of leave?")]
USAGE = {"prompt_tokens": 11, "completion_tokens": 4}
KEY = Principal(subject="key:abc", tenant="acme", scopes=frozenset({"query"}), key_id="abc")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_bucket_lets_a_burst_through_then_one_request_per_refill_interval() -> None:
    clock = Clock(100.0)
    limiter = MemoryRateLimiter(clock)
    decisions = [await limiter.take("k", 2.0, 3) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[3].retry_after_seconds == pytest.approx(0.5)  # one token at 2/s
    clock.now += 0.25
    refused = await limiter.take("k", 2.0, 3)
    assert not refused.allowed
    assert refused.retry_after_seconds == pytest.approx(0.25)
    clock.now += 0.25
    assert (await limiter.take("k", 2.0, 3)).allowed
    assert not (await limiter.take("k", 2.0, 3)).allowed


async def test_a_bucket_refills_only_up_to_its_burst_and_a_clock_going_back_adds_nothing() -> None:
    clock = Clock(100.0)
    limiter = MemoryRateLimiter(clock)
    await limiter.take("k", 1.0, 2)
    clock.now += 1000.0
    assert [(await limiter.take("k", 1.0, 2)).allowed for _ in range(3)] == [True, True, False]
    clock.now -= 50.0
    assert not (await limiter.take("k", 1.0, 2)).allowed
    assert (await limiter.take("other", 1.0, 2)).allowed  # buckets are per key


async def test_beyond_its_size_the_memory_limiter_forgets_the_least_recently_used_bucket() -> None:
    clock = Clock(0.0)
    limiter = MemoryRateLimiter(clock, max_buckets=2)
    for key in ("a", "b"):
        await limiter.take(key, 0.001, 1)
    await limiter.take("a", 0.001, 1)  # a is now the most recent
    await limiter.take("c", 0.001, 1)  # b goes
    assert not (await limiter.take("a", 0.001, 1)).allowed
    assert (await limiter.take("b", 0.001, 1)).allowed


async def test_memory_counters_refuse_what_would_go_over_and_expire() -> None:
    clock = Clock(1000.0)
    counters = MemoryQuotaCounters(clock)
    assert await counters.add("q", 7, 10, expires_at=2000.0) == CounterResult(True, 7)
    assert await counters.add("q", 4, 10, expires_at=2000.0) == CounterResult(False, 7)
    assert await counters.add("q", 3, 10, expires_at=2000.0) == CounterResult(True, 10)
    assert await counters.add("q", 5, None, expires_at=2000.0) == CounterResult(True, 15)
    clock.now = 2000.0
    assert await counters.get("q") == 0
    assert await counters.add("q", 1, 10, expires_at=3000.0) == CounterResult(True, 1)


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.9", ["198.51.100.1"], [], "203.0.113.9"),  # nobody trusted: the header is ignored
        ("10.0.0.5", ["198.51.100.1"], ["10.0.0.0/8"], "198.51.100.1"),
        ("10.0.0.5", ["198.51.100.1, 10.0.0.7"], ["10.0.0.0/8"], "198.51.100.1"),  # two proxies deep
        ("10.0.0.5", ["1.1.1.1, 198.51.100.1"], ["10.0.0.0/8"], "198.51.100.1"),  # a client's own claim is not
        ("10.0.0.5", ["1.1.1.1", "198.51.100.1"], ["10.0.0.0/8"], "198.51.100.1"),  # believed: only the last hop
        ("10.0.0.5", ["garbage"], ["10.0.0.0/8"], "10.0.0.5"),
        ("10.0.0.5", [], ["10.0.0.0/8"], "10.0.0.5"),
        ("2001:db8:1:2:3:4:5:6", [], [], "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", [], [], "192.0.2.1"),
        ("testclient", ["1.1.1.1"], ["10.0.0.0/8"], "testclient"),
    ],
)
def test_the_client_ip_comes_from_forwarded_for_only_through_trusted_proxies(
    peer: str, forwarded: list[str], trusted: list[str], expected: str
) -> None:
    rates = RateLimits(RateLimitSettings(trusted_proxies=trusted), MemoryRateLimiter(), FailOpen())
    assert client_ip(peer, forwarded, rates.trusted_proxies) == expected


async def test_refusals_name_the_limit_and_round_retry_after_up_to_whole_seconds() -> None:
    clock = Clock(0.0)
    settings = RateLimitSettings(per_key_rate=4.0, per_key_burst=1, per_ip_rate=0.1, per_ip_burst=1)
    rates = RateLimits(settings, MemoryRateLimiter(clock), FailOpen())
    before = _sample("ragserve_rate_limited_total", kind="key")
    await rates.check_principal(KEY)
    with pytest.raises(RateLimitedError) as refused:
        await rates.check_principal(KEY)
    assert refused.value.retry_after_seconds == 1  # 0.25 s rounds up to the smallest Retry-After
    assert "caller abc" in refused.value.message
    assert _sample("ragserve_rate_limited_total", kind="key") == before + 1
    await rates.check_client("192.0.2.1")
    with pytest.raises(RateLimitedError) as refused:
        await rates.check_client("192.0.2.1")
    assert refused.value.retry_after_seconds == 10
    for _ in range(5):  # authentication off: the anonymous caller has no key bucket, only IP buckets
        await rates.check_principal(ANONYMOUS)


def _quotas(clock: Clock, **settings: int) -> TenantQuotas:
    return TenantQuotas(RateLimitSettings(**settings), MemoryQuotaCounters(clock), FailOpen(), clock)


async def test_the_request_quota_refuses_until_the_next_utc_day() -> None:
    clock = Clock(datetime(2025, 3, 9, 23, 59, 30, tzinfo=UTC).timestamp())
    quotas = _quotas(clock, requests_per_day=2)
    await quotas.charge_request("acme")
    await quotas.charge_request("acme")
    with pytest.raises(QuotaExceededError) as refused:
        await quotas.charge_request("acme")
    assert refused.value.quota == "requests"
    assert refused.value.retry_after_seconds == 30
    assert "daily quota requests of 2 requests" in refused.value.message
    await quotas.charge_request("other")  # per tenant
    clock.now += 30.0  # a new UTC day
    await quotas.charge_request("acme")


async def test_llm_tokens_are_charged_after_use_and_refuse_once_over() -> None:
    clock = Clock(datetime(2025, 3, 9, 12, tzinfo=UTC).timestamp())
    quotas = _quotas(clock, llm_tokens_per_day=100)
    assert quotas.limits_llm_tokens
    await quotas.check_llm_tokens("acme")
    await quotas.charge_llm_tokens("acme", 99)
    await quotas.check_llm_tokens("acme")
    await quotas.charge_llm_tokens("acme", 50)  # spent already: charged even though it goes over
    with pytest.raises(QuotaExceededError) as refused:
        await quotas.check_llm_tokens("acme")
    assert refused.value.quota == "llm_tokens"
    assert "149 used" in refused.value.message
    assert refused.value.retry_after_seconds == 12 * 3600


async def test_ingest_bytes_that_would_go_over_are_refused_and_not_counted() -> None:
    clock = Clock(datetime(2025, 3, 9, 12, tzinfo=UTC).timestamp())
    quotas = _quotas(clock, ingest_bytes_per_day=1000)
    await quotas.charge_ingest_bytes("acme", 600)
    with pytest.raises(QuotaExceededError) as refused:
        await quotas.charge_ingest_bytes("acme", 500)
    assert refused.value.quota == "ingest_bytes"
    assert "needs 500 more" in refused.value.message
    await quotas.charge_ingest_bytes("acme", 400)


def test_the_stored_chunks_hook_checks_a_count_the_caller_gives() -> None:
    quotas = _quotas(Clock(0.0), stored_chunks=100)
    quotas.check_stored_chunks("acme", stored=90, adding=10)
    with pytest.raises(QuotaExceededError) as refused:
        quotas.check_stored_chunks("acme", stored=90, adding=11)
    assert refused.value.quota == "stored_chunks"
    assert refused.value.retry_after_seconds is None


async def test_unset_quotas_count_nothing() -> None:
    counters = MemoryQuotaCounters()
    quotas = TenantQuotas(RateLimitSettings(), counters, FailOpen())
    for _ in range(3):
        await quotas.charge_request("acme")
        await quotas.charge_llm_tokens("acme", 10)
        await quotas.charge_ingest_bytes("acme", 10)
        await quotas.check_llm_tokens("acme")
    assert not quotas.limits_llm_tokens
    assert not quotas.limits_ingest_bytes


class BrokenLimiter:
    def __init__(self) -> None:
        self.calls = 0

    async def take(self, key: str, rate_per_second: float, burst: int) -> BucketDecision:
        self.calls += 1
        raise RateLimitBackendError("Redis failed: ConnectionError")


async def test_a_failing_backend_lets_requests_through_counts_them_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(0.0)
    limiter = BrokenLimiter()
    settings = RateLimitSettings(per_key_rate=1.0, per_key_burst=1, per_ip_rate=1.0, per_ip_burst=1)
    rates = RateLimits(settings, limiter, FailOpen(pause_seconds=1.0, log_interval_seconds=30.0, clock=clock))
    before = _sample("ragserve_rate_limit_fail_open_total", check="key")
    with caplog.at_level(logging.WARNING, logger="ragserve.security.ratelimit.policy"):
        for _ in range(5):
            await rates.check_principal(KEY)
        clock.now += 1.5  # after the pause the backend is asked again, and fails again
        await rates.check_principal(KEY)
    assert limiter.calls == 2
    assert _sample("ragserve_rate_limit_fail_open_total", check="key") == before + 6
    assert len([r for r in caplog.records if "not enforced" in r.getMessage()]) == 1


async def test_a_failing_backend_lets_quota_checks_through() -> None:
    class BrokenCounters:
        async def add(self, key: str, amount: int, limit: int | None, expires_at: float) -> CounterResult:
            raise RateLimitBackendError("Redis failed")

        async def get(self, key: str) -> int:
            raise RateLimitBackendError("Redis failed")

    quotas = TenantQuotas(
        RateLimitSettings(requests_per_day=1, llm_tokens_per_day=1, ingest_bytes_per_day=1),
        BrokenCounters(),
        FailOpen(pause_seconds=0.0),
    )
    calls: list[Callable[[], Awaitable[None]]] = [
        lambda: quotas.charge_request("acme"),
        lambda: quotas.check_llm_tokens("acme"),
        lambda: quotas.charge_ingest_bytes("acme", 10),
    ]
    for call in calls * 2:
        await call()


async def test_the_gateway_charges_tokens_to_the_principal_the_request_bound() -> None:
    def upstream(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content).get("stream"):
            events = [{"choices": [{"delta": {"content": "25 days"}}]}, {"choices": [], "usage": USAGE}]
            text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            return httpx.Response(200, content=text.encode(), headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json={"choices": [{"message": {"content": "25 days"}}], "usage": USAGE})

    llm = OpenAICompatLLM("p", "http://upstream/v1", "m", "key", transport=httpx.MockTransport(upstream))
    slot = ProviderSlot(llm=llm, breaker=CircuitBreaker("p", 5, 60.0), limiter=EgressLimiter("p", 4, None))
    gateway = LLMGateway([slot], LLMRetrySettings(max_attempts=1), deadline_seconds=10.0)
    charged: list[int] = []

    async def charge(tokens: int) -> None:
        charged.append(tokens)

    async def request() -> None:  # its own context, as each API request has
        bind_token_charge("abc", charge)
        await gateway.complete(MESSAGES, principal="abc")
        await gateway.complete(MESSAGES, principal="judge")  # the service's own calls are not the tenant's
        async for _ in gateway.stream(MESSAGES, principal="abc"):
            pass

    try:
        await asyncio.create_task(request())
        await gateway.complete(MESSAGES, principal="abc")  # another request, which bound nothing
    finally:
        await gateway.aclose()
    assert charged == [15, 15]
