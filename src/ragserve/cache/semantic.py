"""Semantic matching for the answer cache: a cached answer may serve a question worded differently from the
one it was generated for, when the two questions' query vectors have a cosine similarity of at least a
threshold and everything else in their keys (the ``AnswerKey.scope``) is the same.

A semantic entry is only a pointer to an exact entry: it is found by its vector, then the exact entry is
read. Whatever removes the exact entry (a change to a document it was built from, its TTL, eviction) so
also removes the semantic match; dangling pointers are dropped when a lookup meets them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


def unit(vector: Vector) -> Vector:
    """``vector`` as float32 of length 1 (the embedder's vectors already are; this guards the dot product)."""
    flat = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(flat))
    return flat / norm if norm > 0 else flat


def ranked_matches(keys: Sequence[str], matrix: Vector, vector: Vector, threshold: float) -> list[tuple[str, float]]:
    """(key, cosine similarity) of the rows of ``matrix`` (unit vectors, one per key) whose similarity with
    ``vector`` is at least ``threshold``, most similar first; none when the dimensions differ (another model)."""
    query = unit(vector)
    if not keys or matrix.shape[1] != query.shape[0]:
        return []
    similarities = matrix @ query
    order = np.argsort(-similarities, kind="stable")
    return [(keys[i], float(similarities[i])) for i in order if similarities[i] >= threshold]


class ScopeVectors:
    """The question vectors of one scope's cached answers, for the in-process cache: at most ``max_entries``,
    the least recently used dropped first. Not thread-safe: its owner locks."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._vectors: dict[str, Vector] = {}
        self._used: OrderedDict[str, None] = OrderedDict()  # least recently used first
        self._matrix: Vector | None = None  # the rows of ``_vectors`` in their order, rebuilt after a change

    def __len__(self) -> int:
        return len(self._vectors)

    def add(self, key: str, vector: Vector) -> list[str]:
        """Remember ``key``'s question vector; returns the keys dropped to stay within ``max_entries``."""
        self.remove(key)
        self._vectors[key] = unit(vector)
        self._used[key] = None
        self._matrix = None
        dropped = []
        while len(self._used) > self._max:
            oldest = next(iter(self._used))
            self.remove(oldest)
            dropped.append(oldest)
        return dropped

    def remove(self, key: str) -> None:
        if self._vectors.pop(key, None) is not None:
            del self._used[key]
            self._matrix = None

    def touch(self, key: str) -> None:
        if key in self._used:
            self._used.move_to_end(key)

    def matches(self, vector: Vector, threshold: float) -> list[tuple[str, float]]:
        """(key, similarity) of the vectors at least ``threshold`` similar to ``vector``, most similar first."""
        if not self._vectors:
            return []
        if self._matrix is None:
            self._matrix = np.stack(list(self._vectors.values()))
        return ranked_matches(list(self._vectors), self._matrix, vector, threshold)
