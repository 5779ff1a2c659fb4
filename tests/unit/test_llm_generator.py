"""The LLM answer generator: citations checked, abstention, extractive fallback whole and mid-stream."""

from __future__ import annotations

import httpx

from ragserve.domain import Answer, AnswerDelta, SearchHit
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.llm.breaker import CircuitBreaker
from ragserve.llm.egress import EgressLimiter
from ragserve.llm.extractive import ABSTENTION_TEXT, ExtractiveGenerator
from ragserve.llm.gateway import LLMGateway, ProviderSlot
from ragserve.llm.generator import LLMAnswerGenerator
from ragserve.llm.openai_compat import OpenAICompatLLM
from tests.unit.test_llm_gateway import FAST, Script, ok, refused, sse

CONTEXTS = (
    SearchHit(1, "d1", "leave", "Leave policy", None, "Employees get 25 days of paid leave per year.", 0.9, {}),
    SearchHit(2, "d2", "expiry", "Leave expiry", None, "Unused leave days expire at the end of March.", 0.8, {}),
)
QUESTION = "How many days of paid leave do employees get?"


def generator(embedder: OnnxEmbedder, script: Script) -> LLMAnswerGenerator:
    llm = OpenAICompatLLM("gpu", "http://upstream/v1", "m", transport=httpx.MockTransport(script))
    gateway = LLMGateway([ProviderSlot(llm, CircuitBreaker("gpu", 5, 60), EgressLimiter("gpu", 2, None))], FAST, 5)
    return LLMAnswerGenerator(gateway, ExtractiveGenerator(embedder))


async def test_answer_keeps_valid_citations_only(embedder: OnnxEmbedder) -> None:
    llm = generator(embedder, Script(then=ok("Employees get 25 days [1][7].")))
    try:
        answer = await llm.generate(QUESTION, CONTEXTS)
    finally:
        await llm.gateway.aclose()
    assert answer.text == "Employees get 25 days [1]."
    assert answer.generator == "gpu"
    assert [(c.index, c.external_id) for c in answer.citations] == [(1, "leave")]


async def test_model_abstention_is_an_abstention(embedder: OnnxEmbedder) -> None:
    llm = generator(embedder, Script(then=ok(ABSTENTION_TEXT)))
    try:
        answer = await llm.generate("What is the capital of Peru?", CONTEXTS)
    finally:
        await llm.gateway.aclose()
    assert answer.abstained
    assert not answer.citations
    assert answer.generator == "gpu"


async def test_no_context_abstains_without_calling_a_model(embedder: OnnxEmbedder) -> None:
    script = Script()
    llm = generator(embedder, script)
    try:
        answer = await llm.generate(QUESTION, ())
        streamed = [item async for item in llm.stream(QUESTION, ())]
    finally:
        await llm.gateway.aclose()
    assert answer.abstained
    assert isinstance(streamed[-1], Answer)
    assert streamed[-1].abstained
    assert script.calls == 0


async def test_all_providers_down_falls_back_to_extractive(embedder: OnnxEmbedder) -> None:
    llm = generator(embedder, Script(then=refused()))
    try:
        answer = await llm.generate(QUESTION, CONTEXTS)
        streamed = [item async for item in llm.stream(QUESTION, CONTEXTS)]
    finally:
        await llm.gateway.aclose()
    assert answer.generator == "extractive"
    assert not answer.abstained
    assert answer.citations[0].external_id == "leave"
    final = streamed[-1]
    assert isinstance(final, Answer)
    assert final.generator == "extractive"
    assert final.citations


async def test_stream_passes_deltas_and_filters_citations(embedder: OnnxEmbedder) -> None:
    llm = generator(embedder, Script(then=sse("Employees get", " 25 days [", "1][", "3].")))
    try:
        items = [item async for item in llm.stream(QUESTION, CONTEXTS)]
    finally:
        await llm.gateway.aclose()
    deltas = [i.text for i in items if isinstance(i, AnswerDelta)]
    final = items[-1]
    assert isinstance(final, Answer)
    assert "".join(deltas) == final.text == "Employees get 25 days [1]."
    assert final.generator == "gpu"
    assert [c.index for c in final.citations] == [1]


async def test_stream_cut_midway_continues_with_extractive(embedder: OnnxEmbedder) -> None:
    llm = generator(embedder, Script(sse("Employees get", " 25 days [2]", done=False)))
    try:
        items = [item async for item in llm.stream(QUESTION, CONTEXTS)]
    finally:
        await llm.gateway.aclose()
    final = items[-1]
    assert isinstance(final, Answer)
    text = "".join(i.text for i in items if isinstance(i, AnswerDelta))
    assert text == final.text
    assert final.text.startswith("Employees get 25 days [2]\n\n")
    assert final.generator == "extractive"
    assert {c.index for c in final.citations} >= {1, 2}
