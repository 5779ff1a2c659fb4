"""The answer generator that writes answers with a language model through the gateway, and falls back to the
extractive generator when no provider answers, so that an answer never fails because a model did.

An answer's ``generator`` field names the provider that wrote it, or ``extractive``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing

from ragserve.domain import Answer, AnswerDelta, Citation, SearchHit
from ragserve.errors import LLMStreamInterruptedError, LLMUnavailableError
from ragserve.llm.extractive import ABSTENTION_TEXT, ExtractiveGenerator
from ragserve.llm.gateway import LLMGateway
from ragserve.llm.llm import Completion
from ragserve.llm.prompts import AnswerPrompt, CitationStreamFilter, build_answer_prompt, check_citations, is_abstention
from ragserve.observability.metrics import ANSWER_FIRST_TOKEN, LLM_FALLBACKS

_QUOTE_CHARS = 300
_CONTINUATION = "\n\n"


class LLMAnswerGenerator:
    """Prompts with the numbered contexts that fit the smallest provider's window (minus its output budget),
    keeps the citations of passages it showed, and recognises abstentions. With no usable context it
    abstains without calling a model. ``principal`` labels token accounting (an API key's label)."""

    def __init__(self, gateway: LLMGateway, fallback: ExtractiveGenerator) -> None:
        self._gateway = gateway
        self._fallback = fallback

    @property
    def name(self) -> str:
        return "llm"

    @property
    def gateway(self) -> LLMGateway:
        return self._gateway

    def _prompt(self, question: str, contexts: Sequence[SearchHit]) -> AnswerPrompt:
        budget = self._gateway.context_window_tokens - self._gateway.max_output_tokens
        return build_answer_prompt(question, contexts, budget)

    async def generate(self, question: str, contexts: Sequence[SearchHit], *, principal: str = "anonymous") -> Answer:
        """The whole answer; the extractive one when every provider failed."""
        prompt = self._prompt(question, contexts)
        if not prompt.shown or not question.strip():
            return _abstention(self._fallback.name)
        try:
            completion = await self._gateway.complete(prompt.messages, principal=principal)
        except LLMUnavailableError:
            LLM_FALLBACKS.labels(reason="unavailable").inc()
            return await self._fallback.generate(question, contexts)
        return _answer(completion, prompt, contexts)

    async def stream(
        self, question: str, contexts: Sequence[SearchHit], *, principal: str = "anonymous"
    ) -> AsyncIterator[AnswerDelta | Answer]:
        """Deltas as the provider writes them (citations to passages not shown are filtered out on the fly),
        then the ``Answer``, whose text is the deltas joined. If the stream breaks midway, the extractive
        answer follows what was already sent, after a blank line."""
        prompt = self._prompt(question, contexts)
        if not prompt.shown or not question.strip():
            answer = _abstention(self._fallback.name)
            yield AnswerDelta(answer.text)
            yield answer
            return
        started = time.monotonic()
        citations = CitationStreamFilter(prompt.shown)
        sent: list[str] = []
        completion: Completion | None = None
        try:
            async with aclosing(self._gateway.stream(prompt.messages, principal=principal)) as items:
                async for item in items:
                    if isinstance(item, Completion):
                        completion = item
                        continue
                    piece = citations.feed(item)
                    if piece:
                        if not sent:
                            ANSWER_FIRST_TOKEN.labels(generator=self.name).observe(time.monotonic() - started)
                        sent.append(piece)
                        yield AnswerDelta(piece)
        except LLMUnavailableError:
            LLM_FALLBACKS.labels(reason="unavailable").inc()
            async for part in self._fallback.stream(question, contexts):
                yield part
            return
        except LLMStreamInterruptedError:
            LLM_FALLBACKS.labels(reason="interrupted").inc()
            async for part in self._continue_extractive(question, contexts, prompt, "".join(sent)):
                yield part
            return
        tail = citations.flush()
        if tail:
            sent.append(tail)
            yield AnswerDelta(tail)
        text = "".join(sent)
        abstained = is_abstention(text)
        cited = [] if abstained else check_citations(text, prompt.shown)[1]
        provider = completion.provider if completion else self.name
        yield Answer(text=text, abstained=abstained, citations=_citations(cited, contexts), generator=provider)

    async def _continue_extractive(
        self, question: str, contexts: Sequence[SearchHit], prompt: AnswerPrompt, sent: str
    ) -> AsyncIterator[AnswerDelta | Answer]:
        fallback = await self._fallback.generate(question, contexts)
        addition = (_CONTINUATION if sent else "") + fallback.text
        yield AnswerDelta(addition)
        _, cited = check_citations(sent, prompt.shown)
        by_index = {c.index: c for c in _citations(cited, contexts)}
        by_index.update({c.index: c for c in fallback.citations})
        yield Answer(
            text=sent + addition,
            abstained=fallback.abstained and not cited,
            citations=tuple(by_index[i] for i in sorted(by_index)),
            generator=fallback.generator,
        )


def _answer(completion: Completion, prompt: AnswerPrompt, contexts: Sequence[SearchHit]) -> Answer:
    if is_abstention(completion.text):
        return _abstention(completion.provider)
    text, cited = check_citations(completion.text, prompt.shown)
    return Answer(text=text, abstained=False, citations=_citations(cited, contexts), generator=completion.provider)


def _citations(numbers: Sequence[int], contexts: Sequence[SearchHit]) -> tuple[Citation, ...]:
    citations = []
    for n in sorted(numbers):
        hit = contexts[n - 1]
        quote = hit.text if len(hit.text) <= _QUOTE_CHARS else hit.text[:_QUOTE_CHARS].rsplit(" ", 1)[0] + "…"
        citations.append(Citation.of(hit, n, quote))
    return tuple(citations)


def _abstention(generator: str) -> Answer:
    return Answer(text=ABSTENTION_TEXT, abstained=True, citations=(), generator=generator)
