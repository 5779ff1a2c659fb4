"""Follow-up questions made standalone, and the OpenAI-compatible provider's error mapping."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from ragserve.errors import (
    InvalidRequestError,
    LLMRateLimitedError,
    LLMRequestError,
    LLMServerError,
    LLMTimeoutError,
)
from ragserve.llm.conversation import standalone_question
from ragserve.llm.llm import ChatMessage, GenerationOptions
from ragserve.llm.openai_compat import OpenAICompatLLM
from tests.unit.test_llm_gateway import Script, make, ok, refused, slot

TURNS = [
    ChatMessage("user", "What equipment do employees receive?"),
    ChatMessage("assistant", "A laptop on the first day [1]."),
    ChatMessage("user", "How often is it replaced?"),
]


async def test_the_model_rewrites_a_follow_up() -> None:
    script = Script(then=ok("How often are employee laptops replaced?\nextra line"))
    gateway = await make(slot("a", script))
    try:
        question = await standalone_question(TURNS, gateway)
    finally:
        await gateway.aclose()
    assert question == "How often are employee laptops replaced?"


async def test_without_a_model_the_previous_question_gives_the_topic() -> None:
    gateway = await make(slot("a", Script(then=refused())))
    try:
        assert await standalone_question(TURNS, gateway) == (
            "What equipment do employees receive? How often is it replaced?"
        )
    finally:
        await gateway.aclose()
    assert await standalone_question(TURNS, None) == "What equipment do employees receive? How often is it replaced?"


async def test_a_first_question_is_used_as_it_is() -> None:
    script = Script()
    gateway = await make(slot("a", script))
    try:
        assert await standalone_question([ChatMessage("user", " Hi? ")], gateway) == "Hi?"
        with pytest.raises(InvalidRequestError):
            await standalone_question([ChatMessage("assistant", "Hello")], gateway)
    finally:
        await gateway.aclose()
    assert script.calls == 0


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(429, headers={"retry-after": "7"}), LLMRateLimitedError),
        (httpx.Response(503), LLMServerError),
        (httpx.Response(408), LLMTimeoutError),
        (httpx.Response(401), LLMRequestError),
        (httpx.Response(200, json={"unexpected": True}), LLMServerError),
    ],
)
async def test_provider_errors_are_mapped_by_status(response: httpx.Response, error: type[Exception]) -> None:
    llm = OpenAICompatLLM("a", "http://upstream/v1", "m", transport=httpx.MockTransport(Script(then=response)))
    try:
        with pytest.raises(error):
            await llm.complete([ChatMessage("user", "q")], GenerationOptions())
    finally:
        await llm.aclose()


async def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    script = Script(then=httpx.Response(429, headers={"retry-after": when}))
    llm = OpenAICompatLLM("a", "http://upstream/v1", "m", transport=httpx.MockTransport(script))
    try:
        with pytest.raises(LLMRateLimitedError) as caught:
            await llm.complete([ChatMessage("user", "q")], GenerationOptions())
    finally:
        await llm.aclose()
    assert caught.value.retry_after_seconds is not None
    assert 25 < caught.value.retry_after_seconds <= 30


async def test_requests_carry_the_key_and_model() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok()

    llm = OpenAICompatLLM("a", "http://upstream/v1", "m-1", "secret", transport=httpx.MockTransport(handler))
    try:
        await llm.complete([ChatMessage("user", "q")], GenerationOptions(max_tokens=9))
    finally:
        await llm.aclose()
    assert str(seen[0].url) == "http://upstream/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer secret"
    assert b'"model":"m-1"' in seen[0].content.replace(b" ", b"")
