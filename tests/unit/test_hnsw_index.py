"""The HNSW vector index: search, filters, deletes, persistence and catch-up from the store."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from ragserve.domain import SearchFilters
from ragserve.settings import VectorIndexSettings
from ragserve.stores.hnsw import HnswVectorIndex

DIM = 16


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class InMemoryChunks:
    """The two ChunkStore methods catch_up needs."""

    def __init__(self, ids: list[int], vectors: np.ndarray) -> None:
        self.rows = dict(zip(ids, vectors, strict=True))

    def chunk_ids(self, collection_id: str, filters: SearchFilters) -> list[int]:
        return sorted(self.rows)

    def chunk_vectors(self, ids: Sequence[int]) -> np.ndarray:
        return np.stack([self.rows[i] for i in ids])


@pytest.fixture
def index(tmp_path: Path) -> HnswVectorIndex:
    return HnswVectorIndex(tmp_path, DIM, VectorIndexSettings(exact_search_max=50))


def test_search_finds_the_exact_vector_first(index: HnswVectorIndex) -> None:
    vectors = _vectors(500)
    index.upsert("c", list(range(1, 501)), vectors)
    for i in (0, 123, 499):
        (best_id, score), *_ = index.search("c", vectors[i], 5)
        assert best_id == i + 1
        assert score == pytest.approx(1.0, abs=1e-4)
    assert len(index.search("c", vectors[0], 10)) == 10
    assert index.search("other", vectors[0], 10) == []


def test_filtered_search_returns_only_allowed_ids_exact_and_walked(index: HnswVectorIndex) -> None:
    vectors = _vectors(1000, seed=1)
    index.upsert("c", list(range(1000)), vectors)
    few = list(range(0, 1000, 50))  # 20 ids: exact path
    many = list(range(0, 1000, 3))  # 334 ids: HNSW walk with a filter
    for allowed in (few, many):
        results = index.search("c", vectors[7], 10, allowed)
        assert len(results) == 10
        assert {cid for cid, _ in results} <= set(allowed)
        exact = sorted(allowed, key=lambda i: -float(vectors[i] @ vectors[7]))[:10]
        assert len({cid for cid, _ in results} & set(exact)) >= 9
    assert index.search("c", vectors[7], 10, []) == []


def test_deleted_ids_are_never_returned(index: HnswVectorIndex) -> None:
    vectors = _vectors(100, seed=2)
    index.upsert("c", list(range(100)), vectors)
    index.delete("c", [5, 6])
    assert 5 not in {cid for cid, _ in index.search("c", vectors[5], 20)}
    assert 6 not in {cid for cid, _ in index.search("c", vectors[6], 20, [5, 6, 7])}
    index.upsert("c", [100], vectors[5:6])  # reuses a deleted slot
    assert index.search("c", vectors[5], 1)[0][0] == 100


def test_flush_then_reload_then_catch_up(tmp_path: Path) -> None:
    vectors = _vectors(300, seed=3)
    first = HnswVectorIndex(tmp_path, DIM, VectorIndexSettings())
    first.upsert("c", list(range(200)), vectors[:200])
    first.delete("c", [0, 1])
    first.flush()
    # Later changes that never reached the file, as after a crash:
    first.upsert("c", list(range(200, 300)), vectors[200:])

    store = InMemoryChunks([i for i in range(300) if i not in (0, 1, 2)], vectors[3:])
    second = HnswVectorIndex(tmp_path, DIM, VectorIndexSettings())
    added, removed = second.catch_up("c", store)  # type: ignore[arg-type]
    assert added == 100
    assert removed == 3  # ids 0 and 1 (deleted in the file) and 2 (gone from the store)
    assert second.ids("c") == set(range(3, 300))
    assert second.search("c", vectors[250], 1)[0][0] == 250
    assert 2 not in {cid for cid, _ in second.search("c", vectors[2], 10)}
    assert second.catch_up("c", store) == (0, 0)  # type: ignore[arg-type]
