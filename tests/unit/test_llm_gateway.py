"""The gateway over providers whose HTTP is ``httpx.MockTransport``: retries, Retry-After, breaker, fallback,
egress limits, deadline, streaming and token accounting."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from ragserve.errors import LLMStreamInterruptedError, LLMUnavailableError
from ragserve.llm.breaker import CircuitBreaker
from ragserve.llm.egress import EgressLimiter
from ragserve.llm.gateway import LLMGateway, ProviderSlot
from ragserve.llm.llm import ChatMessage, Completion, Usage
from ragserve.llm.openai_compat import OpenAICompatLLM
from ragserve.settings_llm import LLMRetrySettings

Handler = Callable[[httpx.Request], httpx.Response]
MESSAGES = [ChatMessage("user", "How many days of leave?")]
FAST = LLMRetrySettings(max_attempts=3, initial_backoff_seconds=0.001, max_backoff_seconds=0.01, jitter_seconds=0)


def ok(text: str = "25 days [1].") -> httpx.Response:
    body = {"choices": [{"message": {"content": text}}], "usage": {"prompt_tokens": 11, "completion_tokens": 5}}
    return httpx.Response(200, json=body)


def sse(*deltas: str, done: bool = True) -> httpx.Response:
    lines = [json.dumps({"choices": [{"delta": {"content": d}}]}) for d in deltas]
    lines.append(json.dumps({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": len(deltas)}}))
    text = "".join(f"data: {line}\n\n" for line in lines) + ("data: [DONE]\n\n" if done else "")
    return httpx.Response(200, content=text.encode(), headers={"content-type": "text/event-stream"})


class Script:
    """Answers requests with the queued responses (or exceptions), then with ``then``; counts calls."""

    def __init__(self, *queued: httpx.Response | Exception, then: httpx.Response | Exception | None = None) -> None:
        self.queued = list(queued)
        self.then = then
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        item = self.queued.pop(0) if self.queued else self.then
        if item is None:
            raise AssertionError("unexpected request")
        if isinstance(item, Exception):
            raise item
        return item


def refused() -> httpx.ConnectError:
    return httpx.ConnectError("connection refused")


def slot(
    name: str, handler: Handler, *, threshold: int = 5, weight: float | None = None, tpm: int | None = None
) -> ProviderSlot:
    llm = OpenAICompatLLM(name, "http://upstream/v1", "m", "key", transport=httpx.MockTransport(handler))
    return ProviderSlot(
        llm=llm,
        breaker=CircuitBreaker(name, threshold, 60.0),
        limiter=EgressLimiter(name, 4, tpm),
        weight=weight,
        max_output_tokens=64,
    )


async def collect(stream: AsyncIterator[str | Completion], into: list[str | Completion]) -> None:
    async for item in stream:
        into.append(item)


async def make(*slots: ProviderSlot, deadline: float = 10.0, retry: LLMRetrySettings = FAST) -> LLMGateway:
    return LLMGateway(list(slots), retry, deadline, rng=random.Random(7))


async def test_retries_5xx_then_succeeds_and_accounts_tokens() -> None:
    script = Script(httpx.Response(503), httpx.Response(500), then=ok())
    gateway = await make(slot("a", script))
    try:
        completion = await gateway.complete(MESSAGES, principal="team-a")
    finally:
        await gateway.aclose()
    assert (completion.text, completion.provider, script.calls) == ("25 days [1].", "a", 3)
    assert gateway.ledger.totals[("team-a", "a")] == Usage(11, 5)


async def test_client_errors_are_not_retried_and_fall_through() -> None:
    bad, good = Script(then=httpx.Response(400, json={"error": "bad"})), Script(then=ok("b"))
    gateway = await make(slot("a", bad), slot("b", good))
    try:
        assert (await gateway.complete(MESSAGES)).provider == "b"
    finally:
        await gateway.aclose()
    assert bad.calls == 1
    assert gateway.providers[0].breaker.state == "closed", "a bad request says nothing about the provider"


async def test_429_retry_after_is_honoured() -> None:
    script = Script(httpx.Response(429, headers={"retry-after": "0.2"}), then=ok())
    gateway = await make(slot("a", script))
    started = time.monotonic()
    try:
        await gateway.complete(MESSAGES)
    finally:
        await gateway.aclose()
    assert time.monotonic() - started >= 0.2
    assert script.calls == 2


async def test_429_with_a_long_retry_after_moves_on_at_once() -> None:
    slow, other = Script(then=httpx.Response(429, headers={"retry-after": "120"})), Script(then=ok("b"))
    gateway = await make(slot("a", slow), slot("b", other))
    started = time.monotonic()
    try:
        assert (await gateway.complete(MESSAGES)).provider == "b"
    finally:
        await gateway.aclose()
    assert time.monotonic() - started < 1.0
    assert slow.calls == 1


async def test_breaker_opens_and_then_skips_the_dead_provider() -> None:
    dead, alive = Script(then=refused()), Script(then=ok("b"))
    gateway = await make(slot("a", dead, threshold=3), slot("b", alive))
    try:
        first = await gateway.complete(MESSAGES)
        assert (first.provider, dead.calls) == ("b", 3)
        assert gateway.providers[0].breaker.state == "open"
        for _ in range(5):
            assert (await gateway.complete(MESSAGES)).provider == "b"
    finally:
        await gateway.aclose()
    assert dead.calls == 3, "an open breaker sends nothing"


async def test_all_providers_down_raises_unavailable() -> None:
    gateway = await make(slot("a", Script(then=refused())), slot("b", Script(then=httpx.Response(502))))
    try:
        with pytest.raises(LLMUnavailableError, match=r"a: .*b: "):
            await gateway.complete(MESSAGES)
    finally:
        await gateway.aclose()


async def test_deadline_bounds_a_stalled_provider() -> None:
    async def stall(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return ok()

    llm = OpenAICompatLLM("a", "http://upstream/v1", "m", transport=httpx.MockTransport(stall))
    gateway = LLMGateway([ProviderSlot(llm, CircuitBreaker("a", 5, 60), EgressLimiter("a", 1, None))], FAST, 0.3)
    started = time.monotonic()
    try:
        with pytest.raises(LLMUnavailableError):
            await gateway.complete(MESSAGES)
    finally:
        await gateway.aclose()
    assert time.monotonic() - started < 1.5


async def test_tokens_per_minute_budget_moves_to_the_next_provider() -> None:
    capped, other = Script(then=ok("a")), Script(then=ok("b"))
    gateway = await make(slot("a", capped, tpm=200), slot("b", other), deadline=0.5)
    try:
        assert (await gateway.complete(MESSAGES)).provider == "a"
        # The first request reserved its prompt estimate plus 64 output tokens; its real usage (16) was given
        # back, so a few more fit before the bucket runs dry.
        providers = [(await gateway.complete(MESSAGES)).provider for _ in range(12)]
    finally:
        await gateway.aclose()
    assert "b" in providers
    assert providers[0] == "a"


async def test_weights_draw_the_first_provider() -> None:
    gateway = await make(slot("stable", Script(), weight=90), slot("canary", Script(), weight=10), slot("c", Script()))
    try:
        firsts = [gateway.order()[0].name for _ in range(2000)]
    finally:
        await gateway.aclose()
    share = firsts.count("canary") / len(firsts)
    assert 0.07 < share < 0.13
    assert "c" not in firsts
    assert [s.name for s in gateway.order()][2] == "c"


async def test_stream_retries_before_the_first_token() -> None:
    script = Script(httpx.Response(500), refused(), then=sse("25", " days", " [1]."))
    gateway = await make(slot("a", script))
    try:
        items = [item async for item in gateway.stream(MESSAGES)]
    finally:
        await gateway.aclose()
    assert items[:3] == ["25", " days", " [1]."]
    assert items[3] == Completion("25 days [1].", Usage(7, 3), "a")
    assert script.calls == 3


async def test_stream_cut_midway_is_interrupted_not_retried() -> None:
    script = Script(sse("25", " days", done=False), then=sse("never"))
    gateway = await make(slot("a", script))
    seen: list[str | Completion] = []
    try:
        with pytest.raises(LLMStreamInterruptedError):
            await collect(gateway.stream(MESSAGES), seen)
    finally:
        await gateway.aclose()
    assert seen == ["25", " days"]
    assert script.calls == 1


async def test_stream_falls_back_when_the_first_provider_is_down() -> None:
    gateway = await make(slot("a", Script(then=refused())), slot("b", Script(then=sse("hi"))))
    try:
        items = [item async for item in gateway.stream(MESSAGES)]
    finally:
        await gateway.aclose()
    assert items[0] == "hi"
    assert isinstance(items[-1], Completion)
    assert items[-1].provider == "b"
