"""The caches the settings ask for."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ragserve.cache.memory import LocalInvalidation, MemoryAnswerCache
from ragserve.cache.protocol import AnswerCache, Invalidation
from ragserve.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Caches:
    answers: AnswerCache | None
    invalidation: Invalidation

    def close(self) -> None:
        self.invalidation.close()


def build_caches(settings: Settings, shared_store: bool) -> Caches:
    """Redis-backed when ``redis.url`` is set; in-process otherwise. An in-process answer cache next to a
    store other processes write to could serve answers their writes made stale: it is left off then."""
    if settings.redis.url is not None:
        from ragserve.cache.redis import RedisAnswerCache, RedisInvalidation, connect

        client = connect(settings.redis.url.get_secret_value())
        prefix = settings.redis.key_prefix
        shared = RedisAnswerCache(client, prefix, settings.cache.answer_ttl_seconds)
        return Caches(shared if settings.cache.answers else None, RedisInvalidation(client, prefix))
    answers: AnswerCache | None = None
    if settings.cache.answers and not shared_store:
        answers = MemoryAnswerCache(settings.cache.answer_ttl_seconds, settings.cache.answer_max_entries)
    elif settings.cache.answers:
        logger.warning("answer cache off: a shared store needs RAGSERVE_REDIS__URL for a shared answer cache")
    return Caches(answers, LocalInvalidation())
