"""What one answer cost in LLM tokens: the gateway charges every completion it accounts for to the meter of
the code that is running it (a context variable), so the caller learns the cost without the generators
reporting it. Completions run outside a meter (the judge's, a conversation's rewrite) are charged to none."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from ragserve.llm.llm import Usage

T = TypeVar("T")


@dataclass
class TokenMeter:
    """Prompt and completion tokens charged so far."""

    total_tokens: int = 0

    def charge(self, usage: Usage) -> None:
        self.total_tokens += usage.total_tokens


_METER: ContextVar[TokenMeter | None] = ContextVar("ragserve_token_meter", default=None)


def charge(usage: Usage) -> None:
    """Add ``usage`` to the running meter, if there is one."""
    meter = _METER.get()
    if meter is not None:
        meter.charge(usage)


@contextmanager
def metering() -> Iterator[TokenMeter]:
    """A meter for the completions awaited inside the ``with`` block."""
    meter = TokenMeter()
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)


async def metered(items: AsyncIterator[T], meter: TokenMeter) -> AsyncGenerator[T, None]:
    """``items`` with ``meter`` running while each item is produced, and only then: a meter set across a
    ``yield`` would also run in the consumer's code between items."""
    try:
        while True:
            token = _METER.set(meter)
            try:
                item = await anext(items)
            except StopAsyncIteration:
                return
            finally:
                _METER.reset(token)
            yield item
    finally:
        close = getattr(items, "aclose", None)  # an async generator left early is closed now, not by the GC
        if close is not None:
            await close()
