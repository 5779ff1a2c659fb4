"""In-process caches for the embedded, one-process deployment."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from ragserve.domain import Answer


class MemoryAnswerCache:
    """Implements ``AnswerCache``: least recently used answers up to ``max_entries``, each for ``ttl_seconds``."""

    def __init__(self, ttl_seconds: float, max_entries: int) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, Answer, tuple[str, ...]]] = OrderedDict()
        self._by_document: dict[str, set[str]] = {}
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()

    def generations(self, document_ids: Sequence[str]) -> list[int]:
        with self._lock:
            return [self._generations.get(d, 0) for d in document_ids]

    def get(self, key: str) -> Answer | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] < time.monotonic():
                self._remove(key)
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: str, answer: Answer, document_ids: Sequence[str], generations: Sequence[int]) -> bool:
        with self._lock:
            if any(self._generations.get(d, 0) != g for d, g in zip(document_ids, generations, strict=True)):
                return False
            self._remove(key)
            self._entries[key] = (time.monotonic() + self._ttl, answer, tuple(document_ids))
            for document_id in document_ids:
                self._by_document.setdefault(document_id, set()).add(key)
            while len(self._entries) > self._max:
                self._remove(next(iter(self._entries)))
            return True

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
        for document_id in entry[2]:
            keys = self._by_document.get(document_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_document[document_id]


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
