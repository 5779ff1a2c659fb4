"""The in-process llama.cpp provider with the packaged GGUF, built from settings as the service builds it."""

from __future__ import annotations

from pathlib import Path

from ragserve.llm.factory import build_gateway
from ragserve.llm.llm import ChatMessage, Completion
from ragserve.settings_llm import LLMSettings


async def test_local_provider_completes_and_streams(model_cache: Path) -> None:
    settings = LLMSettings.model_validate(
        {"providers": [{"name": "tiny", "kind": "local", "context_window_tokens": 1024, "max_output_tokens": 12}]}
    )
    gateway = build_gateway(settings, model_cache)
    assert gateway is not None
    messages = [ChatMessage("user", "Name a colour.")]
    try:
        completion = await gateway.complete(messages)
        streamed = [item async for item in gateway.stream(messages)]
        early = gateway.stream(messages)
        first = await anext(early)
        await early.aclose()  # stops generation; the model is free for the next request
        again = await gateway.complete(messages)
    finally:
        await gateway.aclose()
    assert completion.provider == "tiny"
    assert completion.text.strip()
    assert 0 < completion.usage.completion_tokens <= 12
    final = streamed[-1]
    assert isinstance(final, Completion)
    assert final.text == "".join(s for s in streamed[:-1] if isinstance(s, str))
    assert final.text.strip()
    assert isinstance(first, str)
    assert again.text.strip()
