"""Cache seams. ``memory.py`` holds the embedded (one-process) implementations, ``redis.py`` the ones shared
by replicas."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from ragserve.cache.answers import CachedAnswer
from ragserve.cache.semantic import Vector
from ragserve.domain import Answer


class AnswerCache(Protocol):
    """Answers by key, each remembering the documents it was built from: a change to any of them removes it.
    An answer stored with a ``scope`` and its question's ``vector`` can also be found by a similar question
    in the same scope (``find_similar``) for as long as its exact entry lives. Backends raise their client's
    errors (e.g. ``redis.RedisError``); the service treats any failure as a miss."""

    def generations(self, document_ids: Sequence[str]) -> list[int]:
        """Each document's change counter, read before an answer is generated from it."""
        ...

    def get(self, key: str) -> CachedAnswer | None: ...

    def put(
        self,
        key: str,
        answer: Answer,
        document_ids: Sequence[str],
        generations: Sequence[int],
        *,
        tokens: int = 0,
        scope: str | None = None,
        vector: Vector | None = None,
    ) -> bool:
        """Store the answer unless a document changed since ``generations`` were read; returns whether it did.
        ``tokens``: what generating it cost. With ``scope`` and ``vector`` it is also indexed for
        ``find_similar``."""
        ...

    def find_similar(self, scope: str, vector: Vector, threshold: float) -> CachedAnswer | None:
        """The live answer in ``scope`` whose question vector is the most cosine-similar to ``vector``, if
        that similarity is at least ``threshold``."""
        ...

    def invalidate_documents(self, document_ids: Sequence[str]) -> int:
        """Drop every answer built from any of ``document_ids``; returns how many."""
        ...


class Invalidation(Protocol):
    """A broadcast of "this key changed" to every replica's in-process caches (this one's included)."""

    def publish(self, topic: str, key: str) -> None: ...

    def subscribe(self, topic: str, callback: Callable[[str], None]) -> None: ...

    def close(self) -> None: ...
