"""The token meter: what the gateway's completions cost is charged to the meter running where they were
awaited, and to no other."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ragserve.llm.gateway import LLMGateway
from ragserve.llm.llm import Completion
from ragserve.llm.metering import TokenMeter, metered, metering
from tests.unit.test_llm_gateway import MESSAGES, Script, make, ok, slot, sse


async def test_a_completion_is_charged_to_the_meter_around_it_only() -> None:
    gateway = await make(slot("a", Script(then=ok())))
    try:
        await gateway.complete(MESSAGES)  # no meter: charged to nobody
        with metering() as meter:
            await gateway.complete(MESSAGES)
            await gateway.complete(MESSAGES)
        await gateway.complete(MESSAGES)  # after the block
    finally:
        await gateway.aclose()
    assert meter.total_tokens == 2 * (11 + 5)


async def _consume(gateway: LLMGateway, meter: TokenMeter) -> list[str | Completion]:
    items: list[str | Completion] = []
    async for item in metered(gateway.stream(MESSAGES), meter):
        items.append(item)
        # The consumer's own completions between items are not the stream's.
        if len(items) == 1:
            await gateway.complete(MESSAGES)
    return items


async def test_a_stream_is_charged_while_it_produces_items_and_not_between_them() -> None:
    gateway = await make(slot("a", Script(sse("25", " days"), then=ok())))
    meter = TokenMeter()
    try:
        items = await _consume(gateway, meter)
    finally:
        await gateway.aclose()
    assert items[:2] == ["25", " days"]
    assert meter.total_tokens == 7 + 2  # the stream's usage; not the 11 + 5 of the completion in between


async def test_a_stream_left_early_is_closed() -> None:
    closed: list[bool] = []

    async def items() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    stream = metered(items(), TokenMeter())
    assert await anext(stream) == 1
    await stream.aclose()
    assert closed == [True]
