"""Contract tests of the ``VectorIndex`` seam for the embedded index at every precision: f32 (the HNSW graph)
and the f16, int8 and binary code tables. Whatever the precision, the nearest vector comes first, scores are
full-precision inner products, a filter is a pre-filter (as many hits as ids pass, up to k), deletes and drops
are honoured, and what was flushed comes back after a restart. (pgvector keeps its vectors in the chunk rows;
its precisions are tested against PostgreSQL in ``tests/integration/test_postgres_store.py``.)"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from ragserve.domain import SearchFilters, VectorPrecision
from ragserve.settings import VectorIndexSettings
from ragserve.stores.hnsw import HnswVectorIndex

DIM = 384  # the default model's: binary codes of fewer bits would be too coarse to pick candidates
N = 2000
PRECISIONS: tuple[VectorPrecision, ...] = ("f32", "f16", "int8", "binary")


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 40 centres, like embeddings of texts on a few dozen topics."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, DIM))
    v = (centres[rng.integers(0, 40, n)] + 0.6 * rng.normal(size=(n, DIM))).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class Chunks:
    """What the index reads from the document store: chunk ids passing filters, and stored vectors."""

    def __init__(self) -> None:
        self.rows: dict[int, np.ndarray] = {}
        self.passing: list[int] | None = None  # what the filters let through (None: every chunk)

    def chunk_ids(self, collection_id: str, filters: SearchFilters) -> list[int]:
        return sorted(self.rows) if self.passing is None or not filters else list(self.passing)

    def chunk_vectors(self, ids: Sequence[int]) -> np.ndarray:
        return np.stack([self.rows[i] for i in ids])


class Harness:
    def __init__(self, directory: Path, precision: VectorPrecision) -> None:
        self.directory, self.precision = directory, precision
        self.chunks = Chunks()
        self.index = self.open()

    def open(self) -> HnswVectorIndex:
        settings = VectorIndexSettings(precision=self.precision, exact_search_max=100)
        return HnswVectorIndex(self.directory, DIM, settings, full_vectors=self.chunks.chunk_vectors)

    def add(self, ids: list[int], vectors: np.ndarray) -> None:
        self.chunks.rows.update(zip(ids, vectors, strict=True))
        self.index.upsert("c", ids, vectors)


@pytest.fixture(params=PRECISIONS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    return Harness(tmp_path, request.param)


def _exact_top(vectors: np.ndarray, ids: Sequence[int], query: np.ndarray, k: int) -> list[int]:
    return sorted(ids, key=lambda i: -float(vectors[i] @ query))[:k]


class TestVectorIndexContract:
    def test_nearest_first_with_full_precision_scores(self, harness: Harness) -> None:
        vectors = _clustered(N)
        harness.add(list(range(N)), vectors)
        for i in (0, 777, N - 1):
            hits = harness.index.search("c", vectors[i], 10)
            assert len(hits) == 10
            assert hits[0][0] == i
            for cid, score in hits:
                assert score == pytest.approx(float(vectors[cid] @ vectors[i]), abs=1e-5)
            assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
        assert harness.index.search("empty", vectors[0], 10) == []

    def test_top_ten_matches_exact_search(self, harness: Harness) -> None:
        vectors = _clustered(N)
        rng = np.random.default_rng(9)
        queries = vectors[rng.integers(0, N, 20)] + 0.05 * rng.normal(size=(20, DIM)).astype(np.float32)
        harness.add(list(range(N)), vectors)
        overlap = [
            len({c for c, _ in harness.index.search("c", q, 10)} & set(_exact_top(vectors, range(N), q, 10)))
            for q in queries
        ]
        assert sum(overlap) / (10 * len(queries)) >= 0.95

    @pytest.mark.parametrize("allowed_count", [3, 60, 700])  # exact (f32), exact, HNSW walk (f32)
    def test_a_filter_is_a_pre_filter(self, harness: Harness, allowed_count: int) -> None:
        vectors = _clustered(N, seed=1)
        harness.add(list(range(N)), vectors)
        allowed = list(range(5, N, N // allowed_count))[:allowed_count]
        query = vectors[4]  # not allowed itself
        hits = harness.index.search("c", query, 10, allowed)
        assert len(hits) == min(10, allowed_count)
        assert {cid for cid, _ in hits} <= set(allowed)
        exact = _exact_top(vectors, allowed, query, 10)
        assert len({cid for cid, _ in hits} & set(exact)) >= min(9, allowed_count)
        for cid, score in hits:
            assert score == pytest.approx(float(vectors[cid] @ query), abs=1e-5)
        assert harness.index.search("c", query, 10, []) == []
        harness.chunks.passing = allowed
        filters = SearchFilters(conditions=(("k", "v"),))
        filtered = harness.index.search_filtered("c", query, 10, filters, harness.chunks)
        assert filtered == hits

    def test_deleted_ids_are_never_returned_and_upserts_replace(self, harness: Harness) -> None:
        vectors = _clustered(300, seed=2)
        harness.add(list(range(300)), vectors)
        harness.index.delete("c", [5, 6, 12345])
        assert 5 not in {cid for cid, _ in harness.index.search("c", vectors[5], 50)}
        assert {cid for cid, _ in harness.index.search("c", vectors[6], 10, [5, 6, 7])} == {7}
        assert harness.index.ids("c") == set(range(300)) - {5, 6}
        harness.add([7], vectors[5:6])  # chunk 7 now has chunk 5's vector
        (best, score), *_ = harness.index.search("c", vectors[5], 1)
        assert best == 7
        assert score == pytest.approx(1.0, abs=1e-5)

    def test_drop_forgets_the_collection(self, harness: Harness) -> None:
        vectors = _clustered(50, seed=3)
        harness.add(list(range(50)), vectors)
        harness.index.flush()
        harness.index.drop("c")
        assert harness.index.ids("c") == set()
        assert harness.index.search("c", vectors[0], 5) == []
        assert list(harness.directory.iterdir()) == []

    def test_flushed_vectors_survive_a_restart_and_catch_up_fills_the_rest(self, harness: Harness) -> None:
        vectors = _clustered(400, seed=4)
        harness.add(list(range(300)), vectors[:300])
        harness.index.delete("c", [0])
        harness.index.flush()
        before = harness.index.search("c", vectors[10], 10)
        # After the flush: chunk 0 left the store; 300..399 were added to the store but not the saved index.
        harness.chunks.rows.pop(0)
        harness.chunks.rows.update(zip(range(300, 400), vectors[300:], strict=True))
        harness.index = harness.open()
        assert harness.index.search("c", vectors[10], 10) == before
        added, _ = harness.index.catch_up("c", harness.chunks)
        assert added == 100
        assert harness.index.ids("c") == set(range(1, 400))
        assert harness.index.search("c", vectors[350], 1)[0][0] == 350
