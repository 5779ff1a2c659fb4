"""The caches the settings ask for."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ragserve.cache.memory import LocalInvalidation, MemoryAnswerCache
from ragserve.cache.protocol import AnswerCache, Invalidation
from ragserve.errors import InvalidRequestError
from ragserve.settings import Settings
from ragserve.stores.protocol import EmbeddingCache

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Caches:
    answers: AnswerCache | None
    invalidation: Invalidation
    embeddings: EmbeddingCache | None = None  # None: the document store's own cache

    def close(self) -> None:
        self.invalidation.close()


def build_caches(settings: Settings, shared_store: bool) -> Caches:
    """Redis-backed when ``redis.url`` is set; in-process otherwise. An in-process answer cache next to a
    store other processes write to could serve answers their writes made stale: it is left off then."""
    if settings.redis.url is not None:
        from ragserve.cache.redis import RedisAnswerCache, RedisEmbeddingCache, RedisInvalidation, connect

        client = connect(settings.redis.url.get_secret_value())
        prefix = settings.redis.key_prefix
        shared = RedisAnswerCache(
            client, prefix, settings.cache.answer_ttl_seconds, settings.cache.semantic_max_entries_per_scope
        )
        embeddings = (
            RedisEmbeddingCache(client, prefix, settings.cache.embedding_ttl_seconds)
            if settings.cache.embeddings == "redis"
            else None
        )
        return Caches(shared if settings.cache.answers else None, RedisInvalidation(client, prefix), embeddings)
    if settings.cache.embeddings == "redis":
        raise InvalidRequestError("cache.embeddings redis needs redis.url (RAGSERVE_REDIS__URL)")
    answers: AnswerCache | None = None
    if settings.cache.answers and not shared_store:
        answers = MemoryAnswerCache(
            settings.cache.answer_ttl_seconds,
            settings.cache.answer_max_entries,
            settings.cache.semantic_max_entries_per_scope,
        )
    elif settings.cache.answers:
        logger.warning("answer cache off: a shared store needs RAGSERVE_REDIS__URL for a shared answer cache")
    return Caches(answers, LocalInvalidation())
