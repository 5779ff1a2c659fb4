"""Cache seams. ``memory.py`` holds the embedded (one-process) implementations, ``redis.py`` the ones shared
by replicas."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from ragserve.domain import Answer


class AnswerCache(Protocol):
    """Answers by key, each remembering the documents it was built from: a change to any of them removes it."""

    def generations(self, document_ids: Sequence[str]) -> list[int]:
        """Each document's change counter, read before an answer is generated from it."""
        ...

    def get(self, key: str) -> Answer | None: ...

    def put(self, key: str, answer: Answer, document_ids: Sequence[str], generations: Sequence[int]) -> bool:
        """Store the answer unless a document changed since ``generations`` were read; returns whether it did."""
        ...

    def invalidate_documents(self, document_ids: Sequence[str]) -> int:
        """Drop every answer built from any of ``document_ids``; returns how many."""
        ...


class Invalidation(Protocol):
    """A broadcast of "this key changed" to every replica's in-process caches (this one's included)."""

    def publish(self, topic: str, key: str) -> None: ...

    def subscribe(self, topic: str, callback: Callable[[str], None]) -> None: ...

    def close(self) -> None: ...
