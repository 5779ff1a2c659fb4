"""The answer cache as the service uses it around each answer: a key scoped by the caller's permission set,
an exact then semantic lookup, and remembering a new answer with the document generations it was built on.

A cache failure never costs an answer: lookups fail as misses and stores are skipped, both logged.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging

import anyio.to_thread

from ragserve.cache.answers import AnswerKey, answer_key
from ragserve.cache.protocol import AnswerCache
from ragserve.cache.semantic import Vector
from ragserve.domain import Answer, Metadata, Principal, SearchFilters, SearchResult
from ragserve.embedding.protocol import Embedder
from ragserve.embedding.reuse import share_query_vector, shared_query_vector
from ragserve.errors import NotFoundError
from ragserve.llm.metering import TokenMeter
from ragserve.llm.prompts import PROMPT_VERSION
from ragserve.observability.metrics import ANSWER_CACHE, ANSWER_CACHE_SAVED_TOKENS
from ragserve.retrieval.state import CollectionState
from ragserve.settings import Settings

logger = logging.getLogger(__name__)


class CachedAnswers:
    """``cache`` None: answers are not cached, and every method is a no-op miss."""

    def __init__(self, cache: AnswerCache | None, state: CollectionState, embedder: Embedder, settings: Settings):
        self._cache = cache
        self._state = state
        self._embedder = embedder
        self._settings = settings

    async def key(
        self, question: str, k: int | None, collection: str | None, filters: Metadata | None, principal: Principal
    ) -> AnswerKey | None:
        """None when answers are not cached, or the collection does not exist yet."""
        if self._cache is None:
            return None
        name = collection or self._settings.default_collection
        try:
            collection_id = await anyio.to_thread.run_sync(self._state.collection_id, name, principal.tenant)
            route = await anyio.to_thread.run_sync(self._state.route, collection_id)
        except NotFoundError:
            return None
        search_filters = SearchFilters.from_mapping(filters)
        # Callers who may read the same documents share answers; nobody else does.
        scope = hashlib.sha256(principal.access.fingerprint.encode()).hexdigest()
        return answer_key(
            question, name, k or self._settings.answer.k, search_filters, route, self.generation_id, scope
        )

    async def lookup(self, key: AnswerKey | None) -> Answer | None:
        """The answer cached for this question; else, with ``cache.semantic``, the one cached for the most
        similar question in the same scope. Counts the lookup and the LLM tokens a hit saved."""
        if key is None or self._cache is None:
            return None
        match = "exact"
        try:
            cached = await anyio.to_thread.run_sync(self._cache.get, key.exact)
            if cached is None and self._settings.cache.semantic:
                match = "semantic"
                vector = await self.question_vector(key.question)
                threshold = self._settings.cache.semantic_threshold
                cached = await anyio.to_thread.run_sync(self._cache.find_similar, key.scope, vector, threshold)
        except Exception:  # a cache outage must cost a cache miss, not the answer
            logger.exception("answer cache lookup failed")
            cached = None
        if cached is None:
            ANSWER_CACHE.labels(result="miss", match="none").inc()
            return None
        ANSWER_CACHE.labels(result="hit", match=match).inc()
        ANSWER_CACHE_SAVED_TOKENS.labels(match=match).inc(cached.tokens)
        return cached.answer

    async def question_vector(self, question: str) -> Vector:
        """The question's query vector, computed once per request: it is shared with the rest of the request,
        so retrieval and the extractive generator reuse it instead of embedding the question again."""
        model_id = self._embedder.model_id
        vector = shared_query_vector(model_id, question)
        if vector is None:
            vector = (await anyio.to_thread.run_sync(self._embedder.embed, [question], "query"))[0]
            share_query_vector(model_id, question, vector)
        return vector

    async def generations(self, key: AnswerKey | None, hits: SearchResult) -> list[int] | None:
        """The hits' documents' generations, read before the answer is made: an answer is stored only against
        these, so a document changed while it was being made leaves it unserved."""
        if key is None or self._cache is None:
            return None
        try:
            documents = [hit.document_id for hit in hits.hits]
            return await anyio.to_thread.run_sync(self._cache.generations, documents)
        except Exception:
            logger.exception("answer cache lookup failed")
            return None

    async def remember(
        self,
        key: AnswerKey | None,
        answer: Answer,
        hits: SearchResult,
        generations: list[int] | None,
        usage: TokenMeter,
    ) -> None:
        """Cache the answer with what it cost; with ``cache.semantic``, also under its question's vector.
        A degraded search's answer is not cached."""
        if key is None or generations is None or self._cache is None or hits.degraded:
            return
        try:
            vector = await self.question_vector(key.question) if self._settings.cache.semantic else None
            documents = [hit.document_id for hit in hits.hits]
            put = functools.partial(self._cache.put, tokens=usage.total_tokens, scope=key.scope, vector=vector)
            await anyio.to_thread.run_sync(put, key.exact, answer, documents, generations)
        except Exception:
            logger.exception("could not cache an answer")

    @property
    def generation_id(self) -> str:
        """What answers are made with: the providers in order, the prompt version, the answer settings and the
        embedding model (the extractive generator's, and the space of the cache's question vectors)."""
        providers = [(p.name, p.kind, p.model, p.base_url) for p in self._settings.llm.providers]
        answer = self._settings.answer.model_dump()
        return json.dumps([providers, PROMPT_VERSION, answer, self._embedder.model_id], default=str)
