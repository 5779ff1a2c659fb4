"""In-process caches for the embedded, one-process deployment."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ragserve.cache.answers import CachedAnswer
from ragserve.cache.semantic import ScopeVectors, Vector
from ragserve.domain import Answer


@dataclass(frozen=True, slots=True)
class _Entry:
    expires: float  # time.monotonic()
    answer: Answer
    document_ids: tuple[str, ...]
    tokens: int
    scope: str | None  # indexed for semantic matches in this scope


class MemoryAnswerCache:
    """Implements ``AnswerCache``: least recently used answers up to ``max_entries``, each for ``ttl_seconds``;
    at most ``semantic_max_entries_per_scope`` of a scope's answers are indexed for semantic matches (the
    least recently used lose their index entry, not their exact one)."""

    def __init__(self, ttl_seconds: float, max_entries: int, semantic_max_entries_per_scope: int = 1000) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._max_per_scope = semantic_max_entries_per_scope
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._by_document: dict[str, set[str]] = {}
        self._generations: dict[str, int] = {}
        self._scopes: dict[str, ScopeVectors] = {}
        self._lock = threading.Lock()

    def generations(self, document_ids: Sequence[str]) -> list[int]:
        with self._lock:
            return [self._generations.get(d, 0) for d in document_ids]

    def get(self, key: str) -> CachedAnswer | None:
        with self._lock:
            entry = self._live(key)
            return None if entry is None else CachedAnswer(entry.answer, entry.tokens)

    def _live(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires < time.monotonic():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry

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
        with self._lock:
            if any(self._generations.get(d, 0) != g for d, g in zip(document_ids, generations, strict=True)):
                return False
            self._remove(key)
            indexed = scope if vector is not None else None
            expires = time.monotonic() + self._ttl
            self._entries[key] = _Entry(expires, answer, tuple(document_ids), tokens, indexed)
            for document_id in document_ids:
                self._by_document.setdefault(document_id, set()).add(key)
            if indexed is not None and vector is not None:
                vectors = self._scopes.setdefault(indexed, ScopeVectors(self._max_per_scope))
                for dropped in vectors.add(key, vector):
                    self._entries[dropped] = dataclasses.replace(self._entries[dropped], scope=None)
            while len(self._entries) > self._max:
                self._remove(next(iter(self._entries)))
            return True

    def find_similar(self, scope: str, vector: Vector, threshold: float) -> CachedAnswer | None:
        with self._lock:
            vectors = self._scopes.get(scope)
            if vectors is None:
                return None
            for key, similarity in vectors.matches(vector, threshold):
                entry = self._live(key)  # an expired one is removed, from the scope's vectors too
                if entry is not None:
                    vectors.touch(key)
                    return CachedAnswer(entry.answer, entry.tokens, similarity)
            return None

    def invalidate_documents(self, document_ids: Sequence[str]) -> int:
        with self._lock:
            for d in document_ids:
                self._generations[d] = self._generations.get(d, 0) + 1
            keys = {key for d in document_ids for key in self._by_document.get(d, ())}
            for key in keys:
                self._remove(key)
            return len(keys)

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        for document_id in entry.document_ids:
            keys = self._by_document.get(document_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_document[document_id]
        if entry.scope is not None and (vectors := self._scopes.get(entry.scope)) is not None:
            vectors.remove(key)
            if not vectors:
                del self._scopes[entry.scope]


class LocalInvalidation:
    """Implements ``Invalidation`` for one process: callbacks run at once."""

    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callable[[str], None]]] = {}

    def publish(self, topic: str, key: str) -> None:
        for callback in self._callbacks.get(topic, ()):
            callback(key)

    def subscribe(self, topic: str, callback: Callable[[str], None]) -> None:
        self._callbacks.setdefault(topic, []).append(callback)

    def close(self) -> None:
        self._callbacks.clear()
