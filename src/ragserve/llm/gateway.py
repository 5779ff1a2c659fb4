"""The LLM gateway: one request, tried at each provider in order until one answers.

Per provider: the circuit breaker is asked first (an open one costs nothing), then the egress limiter
(concurrency slots, tokens per minute); ``LLMRetryableError``s are retried with exponential backoff and
jitter (a 429's Retry-After is honoured when it fits the deadline); any other failure moves on to the next
provider. A stream is retried or moved on only until its first text: after that a failure raises
``LLMStreamInterruptedError``, since the text already passed on cannot be taken back. Each answer has an
overall deadline; tokens are accounted per principal and provider, and charged to the quota that the request
bound (``bind_token_charge``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from contextvars import ContextVar
from dataclasses import dataclass, field

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from ragserve.errors import (
    LLMCircuitOpenError,
    LLMError,
    LLMRateLimitedError,
    LLMRequestError,
    LLMRetryableError,
    LLMStreamInterruptedError,
    LLMTimeoutError,
    LLMUnavailableError,
)
from ragserve.llm.breaker import CircuitBreaker
from ragserve.llm.egress import EgressLimiter
from ragserve.llm.llm import LLM, ChatMessage, Completion, GenerationOptions, Usage
from ragserve.llm.metering import charge
from ragserve.llm.prompts import estimate_tokens
from ragserve.observability.metrics import LLM_FIRST_TOKEN, LLM_REQUESTS, LLM_TOKENS
from ragserve.settings_llm import LLMRetrySettings

logger = logging.getLogger(__name__)


@dataclass
class ProviderSlot:
    """A provider with its breaker and limits, as the gateway holds it."""

    llm: LLM
    breaker: CircuitBreaker
    limiter: EgressLimiter
    weight: float | None = None
    context_window_tokens: int = 8192
    max_output_tokens: int = 512

    @property
    def name(self) -> str:
        return self.llm.name


@dataclass
class TokenLedger:
    """Prompt and completion tokens per (principal, provider), also counted in ``ragserve_llm_tokens_total``."""

    totals: dict[tuple[str, str], Usage] = field(default_factory=dict)

    def record(self, principal: str, provider: str, usage: Usage) -> None:
        old = self.totals.get((principal, provider), Usage())
        self.totals[(principal, provider)] = Usage(
            old.prompt_tokens + usage.prompt_tokens, old.completion_tokens + usage.completion_tokens
        )
        LLM_TOKENS.labels(provider=provider, principal=principal, kind="prompt").inc(usage.prompt_tokens)
        LLM_TOKENS.labels(provider=provider, principal=principal, kind="completion").inc(usage.completion_tokens)
        charge(usage)  # to the answer being generated, if its caller meters it


TokenCharge = Callable[[int], Awaitable[None]]
_TOKEN_CHARGE: ContextVar[tuple[str, TokenCharge] | None] = ContextVar("ragserve_llm_token_charge", default=None)


def bind_token_charge(principal: str, charge: TokenCharge) -> None:
    """From now on in the current context (one API request, and tasks it starts), tokens the gateway spends
    for ``principal`` (a label, as passed to ``complete``/``stream``) are also passed to ``charge``: a tenant's
    daily quota. Calls for other principals (the groundedness judge's) are not charged."""
    _TOKEN_CHARGE.set((principal, charge))


async def _charge_tokens(principal: str, usage: Usage) -> None:
    bound = _TOKEN_CHARGE.get()
    if bound is not None and bound[0] == principal:
        await bound[1](usage.total_tokens)


class LLMGateway:
    """Ordered providers (weights draw the first one, for canary splits) behind ``complete`` and ``stream``.
    Raises ``LLMUnavailableError`` when every provider failed or ``deadline_seconds`` passed."""

    def __init__(
        self,
        slots: Sequence[ProviderSlot],
        retry: LLMRetrySettings,
        deadline_seconds: float,
        temperature: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if not slots:
            raise ValueError("the gateway needs at least one provider")
        self._slots = list(slots)
        self._retry = retry
        self._deadline_seconds = deadline_seconds
        self._temperature = temperature
        self._rng = rng or random.Random()
        self.ledger = TokenLedger()

    @property
    def providers(self) -> list[ProviderSlot]:
        return list(self._slots)

    @property
    def context_window_tokens(self) -> int:
        """The smallest window among the providers: a prompt that fits it fits any of them."""
        return min(s.context_window_tokens for s in self._slots)

    @property
    def max_output_tokens(self) -> int:
        return max(s.max_output_tokens for s in self._slots)

    async def aclose(self) -> None:
        for slot in self._slots:
            await slot.llm.aclose()

    def order(self) -> list[ProviderSlot]:
        """Providers in the order to try them: list order, except that one drawn by weight goes first."""
        weighted = [s for s in self._slots if s.weight]
        if not weighted:
            return list(self._slots)
        first = self._rng.choices(weighted, weights=[s.weight or 0.0 for s in weighted])[0]
        return [first, *(s for s in self._slots if s is not first)]

    def _options(self, slot: ProviderSlot, max_tokens: int | None) -> GenerationOptions:
        limit = min(max_tokens, slot.max_output_tokens) if max_tokens else slot.max_output_tokens
        return GenerationOptions(max_tokens=limit, temperature=self._temperature)

    async def complete(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, principal: str = "anonymous"
    ) -> Completion:
        """The whole reply from the first provider that gives one."""
        deadline = time.monotonic() + self._deadline_seconds
        failures: list[str] = []
        for slot in self.order():
            if time.monotonic() >= deadline:
                failures.append("the answer's deadline passed")
                break
            options = self._options(slot, max_tokens)
            try:
                completion = await self._complete_with(slot, messages, options, deadline)
            except LLMError as exc:
                failures.append(f"{slot.name}: {exc.message}")
                if not isinstance(exc, LLMCircuitOpenError):  # an open breaker was logged when it opened
                    logger.warning("LLM provider %s failed, trying the next: %s", slot.name, exc.message)
                continue
            self.ledger.record(principal, completion.provider, completion.usage)
            await _charge_tokens(principal, completion.usage)
            return completion
        raise LLMUnavailableError("no LLM provider answered: " + "; ".join(failures))

    async def _complete_with(
        self, slot: ProviderSlot, messages: Sequence[ChatMessage], options: GenerationOptions, deadline: float
    ) -> Completion:
        reserve = estimate_tokens(messages) + options.max_tokens
        async for attempt in self._retrying(slot, deadline):
            with attempt:
                async with _Admission(slot, reserve, deadline) as admission:
                    try:
                        async with asyncio.timeout(deadline - time.monotonic()):
                            completion = await slot.llm.complete(messages, options)
                    except TimeoutError:
                        raise LLMTimeoutError(f"{slot.name}: the answer's deadline passed") from None
                    admission.succeeded(completion.usage, reserve)
                    return completion
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, principal: str = "anonymous"
    ) -> AsyncGenerator[str | Completion, None]:
        """Text deltas from the first provider that starts answering, then the whole ``Completion``."""
        deadline = time.monotonic() + self._deadline_seconds
        failures: list[str] = []
        for slot in self.order():
            if time.monotonic() >= deadline:
                failures.append("the answer's deadline passed")
                break
            items = self._stream_from(slot, messages, self._options(slot, max_tokens), deadline)
            try:
                first = await anext(items)
            except LLMError as exc:
                await items.aclose()
                failures.append(f"{slot.name}: {exc.message}")
                if not isinstance(exc, LLMCircuitOpenError):  # an open breaker was logged when it opened
                    logger.warning("LLM provider %s failed, trying the next: %s", slot.name, exc.message)
                continue
            try:
                yield first
                async for item in items:
                    if isinstance(item, Completion):
                        self.ledger.record(principal, item.provider, item.usage)
                        await _charge_tokens(principal, item.usage)
                    yield item
            finally:
                await items.aclose()
            return
        raise LLMUnavailableError("no LLM provider answered: " + "; ".join(failures))

    async def _stream_from(
        self, slot: ProviderSlot, messages: Sequence[ChatMessage], options: GenerationOptions, deadline: float
    ) -> AsyncGenerator[str | Completion, None]:
        """One provider's stream. Starting it and waiting for the first item are retried as in ``complete``;
        the admission and the upstream request then stay open (on ``held``) until the stream ends."""
        reserve = estimate_tokens(messages) + options.max_tokens
        async with AsyncExitStack() as held:
            async for attempt in self._retrying(slot, deadline):
                with attempt:
                    async with AsyncExitStack() as stack:
                        admission = await stack.enter_async_context(_Admission(slot, reserve, deadline))
                        started = time.monotonic()
                        items = slot.llm.stream(messages, options)
                        if isinstance(items, AsyncGenerator):
                            stack.push_async_callback(items.aclose)
                        first = await _next_before(items, deadline, slot.name)
                        LLM_FIRST_TOKEN.labels(provider=slot.name).observe(time.monotonic() - started)
                        held.push_async_exit(stack.pop_all())
            text: list[str] = []
            item = first
            try:
                while isinstance(item, str):
                    text.append(item)
                    yield item
                    item = await _next_before(items, deadline, slot.name)
            except LLMError as exc:
                raise LLMStreamInterruptedError(f"{slot.name}: the stream failed midway: {exc.message}") from exc
            admission.succeeded(item, reserve)
            yield Completion(text="".join(text), usage=item, provider=slot.name)

    def _retrying(self, slot: ProviderSlot, deadline: float) -> AsyncRetrying:
        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, LLMRateLimitedError) and exc.retry_after_seconds is not None:
                return exc.retry_after_seconds
            backoff = self._retry.initial_backoff_seconds * 2.0 ** (state.attempt_number - 1)
            return min(backoff, self._retry.max_backoff_seconds) + random.uniform(0, self._retry.jitter_seconds)

        def stop(state: RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            pause = state.upcoming_sleep
            return (
                state.attempt_number >= self._retry.max_attempts
                or slot.breaker.state != "closed"
                or (isinstance(exc, LLMRateLimitedError) and pause > self._retry.max_retry_after_seconds)
                or time.monotonic() + pause >= deadline
            )

        def count(state: RetryCallState) -> None:
            LLM_REQUESTS.labels(provider=slot.name, outcome="retried").inc()

        return AsyncRetrying(
            retry=retry_if_exception_type(LLMRetryableError),
            wait=wait,
            stop=stop,
            before_sleep=count,
            reraise=True,
        )


class _Admission:
    """One attempt at a provider: breaker permission and egress limits on entry; on exit, the outcome is
    reported to the breaker and the metrics, and the token reservation settled against the real usage."""

    def __init__(self, slot: ProviderSlot, reserve: int, deadline: float) -> None:
        self._slot = slot
        self._reserve = reserve
        self._deadline = deadline
        self._stack = AsyncExitStack()
        self._settled = False

    async def __aenter__(self) -> _Admission:
        slot = self._slot
        if not slot.breaker.allow():
            LLM_REQUESTS.labels(provider=slot.name, outcome="rejected").inc()
            raise LLMCircuitOpenError(f"{slot.name}: circuit open")
        try:
            await self._stack.enter_async_context(
                slot.limiter.acquire(self._reserve, self._deadline - time.monotonic())
            )
        except LLMCircuitOpenError:
            slot.breaker.release()
            LLM_REQUESTS.labels(provider=slot.name, outcome="rejected").inc()
            raise
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, LLMError):
            self.failed(exc)
        elif not self._settled:
            self._slot.breaker.release()
        await self._stack.aclose()

    def succeeded(self, usage: Usage, reserved: int) -> None:
        self._settled = True
        self._slot.breaker.record_success()
        if self._slot.limiter.bucket is not None:
            self._slot.limiter.bucket.give_back(reserved - usage.total_tokens)
        LLM_REQUESTS.labels(provider=self._slot.name, outcome="success").inc()

    def failed(self, exc: LLMError) -> None:
        if self._settled:
            return
        self._settled = True
        if isinstance(exc, LLMRequestError):
            self._slot.breaker.release()  # the request was at fault, not the provider
        else:
            self._slot.breaker.record_failure()
        outcome = "retryable" if isinstance(exc, LLMRetryableError) else "failed"
        LLM_REQUESTS.labels(provider=self._slot.name, outcome=outcome).inc()


async def _next_before(items: AsyncIterator[str | Usage], deadline: float, provider: str) -> str | Usage:
    try:
        async with asyncio.timeout(deadline - time.monotonic()):
            return await anext(items)
    except TimeoutError:
        raise LLMTimeoutError(f"{provider}: the answer's deadline passed") from None
    except StopAsyncIteration:
        raise LLMStreamInterruptedError(f"{provider}: the stream ended without usage") from None
