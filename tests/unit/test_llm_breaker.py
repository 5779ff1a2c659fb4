"""The circuit breaker's states, and the metric that exports them."""

from __future__ import annotations

from prometheus_client import REGISTRY

from ragserve.llm.breaker import CircuitBreaker
from ragserve.llm.egress import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _gauge(provider: str) -> float | None:
    return REGISTRY.get_sample_value("ragserve_llm_breaker_state", {"provider": provider})


def test_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker("b-open", failure_threshold=3, reset_timeout_seconds=10, clock=Clock())
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()  # resets the count: failures must be consecutive
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    assert _gauge("b-open") == 2


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker("b-probe", failure_threshold=1, reset_timeout_seconds=10, clock=clock)
    breaker.record_failure()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.state == "half_open"
    assert _gauge("b-probe") == 1
    assert breaker.allow()
    assert not breaker.allow(), "only one probe at a time"
    breaker.record_success()
    assert breaker.state == "closed"
    assert _gauge("b-probe") == 0
    assert breaker.allow()


def test_failed_probe_reopens_for_a_full_timeout() -> None:
    clock = Clock()
    breaker = CircuitBreaker("b-reopen", failure_threshold=5, reset_timeout_seconds=10, clock=clock)
    for _ in range(5):
        breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 9
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_released_probe_can_be_retried() -> None:
    clock = Clock()
    breaker = CircuitBreaker("b-release", failure_threshold=1, reset_timeout_seconds=1, clock=clock)
    breaker.record_failure()
    clock.now += 1
    assert breaker.allow()
    breaker.release()  # e.g. the client went away: no verdict on the provider
    assert breaker.allow()


def test_token_bucket_refills_per_minute() -> None:
    clock = Clock()
    bucket = TokenBucket(600, clock=clock)  # 10 tokens per second
    assert bucket.wait_seconds(600) == 0
    bucket.take(600)
    assert bucket.wait_seconds(100) == 10.0
    clock.now += 5
    assert bucket.wait_seconds(100) == 5.0
    bucket.give_back(100)  # the request used fewer tokens than reserved
    assert bucket.wait_seconds(100) == 0
