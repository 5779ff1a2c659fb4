"""A provider for any OpenAI-compatible chat completions server: vLLM, Ollama, llama.cpp server, TGI, hosted APIs.

httpx's and the server's failures become ``LLMError`` types in ``_map_transport`` and ``_raise_for_status``,
the only two places that look at them.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import httpx

from ragserve.errors import (
    LLMConnectionError,
    LLMError,
    LLMRateLimitedError,
    LLMRequestError,
    LLMServerError,
    LLMTimeoutError,
)
from ragserve.llm.llm import ChatMessage, Completion, GenerationOptions, Usage
from ragserve.llm.prompts import estimate_tokens

T = TypeVar("T")
_MAX_ERROR_CHARS = 300


class OpenAICompatLLM:
    """Calls ``POST {base_url}/chat/completions``. ``connect_timeout_seconds`` bounds connecting,
    ``first_token_timeout_seconds`` the wait for the first streamed byte (and each later one),
    ``total_timeout_seconds`` the whole request. ``transport`` lets tests substitute ``httpx.MockTransport``."""

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        connect_timeout_seconds: float = 2.0,
        first_token_timeout_seconds: float = 20.0,
        total_timeout_seconds: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._name = name
        self._model = model
        self._total_seconds = total_timeout_seconds
        self._whole = httpx.Timeout(total_timeout_seconds, connect=connect_timeout_seconds)
        self._streamed = httpx.Timeout(first_token_timeout_seconds, connect=connect_timeout_seconds)
        self._client = httpx.AsyncClient(base_url=base_url, headers=headers, transport=transport)

    @property
    def name(self) -> str:
        return self._name

    async def aclose(self) -> None:
        await self._client.aclose()

    def _body(self, messages: Sequence[ChatMessage], options: GenerationOptions, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def complete(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> Completion:
        deadline = time.monotonic() + self._total_seconds
        body = self._body(messages, options, stream=False)
        response = await _bounded(self._client.post("chat/completions", json=body, timeout=self._whole), deadline)
        _raise_for_status(response)
        try:
            data = response.json()
            text = data["choices"][0]["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LLMServerError(f"{self._name}: malformed completion response ({exc!r})") from None
        usage = _usage(data.get("usage"))
        if usage is None:
            usage = Usage(estimate_tokens(messages), estimate_tokens([text]), is_estimated=True)
        return Completion(text=str(text), usage=usage, provider=self._name)

    async def stream(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> AsyncIterator[str | Usage]:
        deadline = time.monotonic() + self._total_seconds
        body = self._body(messages, options, stream=True)
        deltas = 0
        usage: Usage | None = None
        async with AsyncExitStack() as stack:
            request = self._client.stream("POST", "chat/completions", json=body, timeout=self._streamed)
            response = await _bounded(stack.enter_async_context(request), deadline)
            if response.status_code >= 400:
                await _bounded(response.aread(), deadline)
                _raise_for_status(response)
            lines = response.aiter_lines()
            while True:
                line = await _bounded(anext(lines, None), deadline)
                if line is None:
                    raise LLMConnectionError(f"{self._name}: the stream ended before [DONE]")
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                text, chunk_usage = _parse_chunk(self._name, payload)
                usage = chunk_usage or usage
                if text:
                    deltas += 1
                    yield text
        yield usage or Usage(estimate_tokens(messages), deltas, is_estimated=True)


async def _bounded(step: Awaitable[T], deadline: float) -> T:
    """One awaited step under the request's overall deadline, with httpx's errors translated."""
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            return await step
    except TimeoutError:
        raise LLMTimeoutError("the provider's total timeout passed") from None
    except httpx.HTTPError as exc:
        raise _map_transport(exc) from exc


def _map_transport(exc: httpx.HTTPError) -> LLMError:
    if isinstance(exc, httpx.TimeoutException):
        return LLMTimeoutError(f"timed out: {type(exc).__name__}")
    if isinstance(exc, httpx.TransportError):
        return LLMConnectionError(f"connection failed: {type(exc).__name__}")
    return LLMServerError(f"bad response: {type(exc).__name__}")


def _raise_for_status(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    detail = f"HTTP {status}: {response.text[:_MAX_ERROR_CHARS]}"
    if status == 429:
        raise LLMRateLimitedError(detail, _retry_after_seconds(response.headers.get("retry-after")))
    if status == 408:
        raise LLMTimeoutError(detail)
    if status >= 500:
        raise LLMServerError(detail)
    raise LLMRequestError(detail)


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _parse_chunk(provider: str, payload: str) -> tuple[str, Usage | None]:
    try:
        data = json.loads(payload)
        if "error" in data:
            raise LLMServerError(f"{provider}: error in stream: {str(data['error'])[:_MAX_ERROR_CHARS]}")
        choices = data.get("choices") or []
        text = (choices[0].get("delta") or {}).get("content") or "" if choices else ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise LLMServerError(f"{provider}: malformed stream chunk ({exc!r})") from None
    return str(text), _usage(data.get("usage"))


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    try:
        return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))
    except (TypeError, ValueError):
        return None
