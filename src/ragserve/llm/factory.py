"""Builds the answer generator from settings: the LLM gateway over the configured providers with the
extractive generator as the last resort, or the extractive generator alone when no provider is configured."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ragserve.embedding.protocol import Embedder
from ragserve.llm.abstention import DEFAULT_ABSTENTION
from ragserve.llm.breaker import CircuitBreaker
from ragserve.llm.egress import EgressLimiter
from ragserve.llm.extractive import ExtractiveGenerator
from ragserve.llm.gateway import LLMGateway, ProviderSlot
from ragserve.llm.generator import LLMAnswerGenerator
from ragserve.llm.llm import LLM
from ragserve.llm.protocol import AnswerGenerator
from ragserve.settings import Settings
from ragserve.settings_llm import LLMProviderSettings, LLMSettings


@dataclass(frozen=True, slots=True)
class Generation:
    """The generator the service answers with, and the gateway behind it (``None``: extractive only)."""

    generator: AnswerGenerator
    gateway: LLMGateway | None

    async def aclose(self) -> None:
        if self.gateway is not None:
            await self.gateway.aclose()


def build_llm(provider: LLMProviderSettings, model_cache_dir: Path) -> LLM:
    """One provider by its ``kind``. Raises ``LLMRequestError`` when the ``local`` extra is missing."""
    if provider.kind == "openai_compat":
        from ragserve.llm.openai_compat import OpenAICompatLLM

        assert provider.base_url is not None  # checked by LLMProviderSettings
        return OpenAICompatLLM(
            provider.name,
            provider.base_url,
            provider.model,
            provider.api_key.get_secret_value() if provider.api_key else None,
            connect_timeout_seconds=provider.connect_timeout_seconds,
            first_token_timeout_seconds=provider.first_token_timeout_seconds,
            total_timeout_seconds=provider.total_timeout_seconds,
        )
    from ragserve.llm.local import LlamaCppLLM, packaged_model_path

    return LlamaCppLLM(
        provider.name,
        provider.model_path or packaged_model_path(model_cache_dir),
        chat_format=provider.chat_format,
        context_window_tokens=provider.context_window_tokens,
    )


def build_gateway(settings: LLMSettings, model_cache_dir: Path) -> LLMGateway | None:
    """The gateway over ``settings.providers`` in order, or ``None`` when there are none."""
    slots = []
    for provider in settings.providers:
        slots.append(
            ProviderSlot(
                llm=build_llm(provider, model_cache_dir),
                breaker=CircuitBreaker(
                    provider.name, settings.breaker.failure_threshold, settings.breaker.reset_timeout_seconds
                ),
                limiter=EgressLimiter(provider.name, provider.max_concurrency, provider.tokens_per_minute),
                weight=provider.weight,
                context_window_tokens=provider.context_window_tokens,
                max_output_tokens=provider.max_output_tokens,
            )
        )
    if not slots:
        return None
    return LLMGateway(slots, settings.retry, settings.deadline_seconds, settings.temperature)


def build_generation(settings: Settings, embedder: Embedder) -> Generation:
    extractive = ExtractiveGenerator(
        embedder,
        max_sentences=settings.answer.max_sentences,
        max_words=settings.answer.max_words,
        abstention=replace(DEFAULT_ABSTENTION, min_confidence=settings.answer.min_confidence),
    )
    gateway = build_gateway(settings.llm, settings.model_cache_dir)
    if gateway is None:
        return Generation(extractive, None)
    return Generation(LLMAnswerGenerator(gateway, extractive), gateway)
