"""The embedded vector index: one hnswlib HNSW graph per collection, saved as a file beside the database.

The graph is derived data. It is saved every few seconds when it changed and at shutdown; after a crash,
``catch_up`` re-adds from SQLite whatever the file is missing and drops what SQLite no longer has.
Filtered search is exact (a matrix product over the allowed vectors) when few chunks pass the filter, and
an HNSW walk restricted to the allowed ids otherwise: post-filtering would lose recall.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import hnswlib
import numpy as np

from ragserve.domain import SearchFilters
from ragserve.settings import VectorIndexSettings
from ragserve.stores.protocol import ChunkStore, Vectors

logger = logging.getLogger(__name__)

_INITIAL_CAPACITY = 1024


class _CollectionGraph:
    """One collection's HNSW graph with the set of live labels (chunk ids)."""

    def __init__(self, path: Path, dim: int, settings: VectorIndexSettings) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.dirty = False
        self.index = hnswlib.Index(space="ip", dim=dim)
        if path.exists():
            self.index.load_index(str(path), allow_replace_deleted=True)
            self.live: set[int] = {int(i) for i in self.index.get_ids_list()}
        else:
            self.index.init_index(
                max_elements=_INITIAL_CAPACITY,
                ef_construction=settings.ef_construction,
                M=settings.m,
                allow_replace_deleted=True,
            )
            self.live = set()
        self.index.set_ef(settings.ef_search)

    def ensure_capacity(self, extra: int) -> None:
        needed = self.index.get_current_count() + extra
        capacity = self.index.get_max_elements()
        if needed > capacity:
            self.index.resize_index(max(needed, capacity * 2))


class HnswVectorIndex:
    """Implements ``VectorIndex`` with hnswlib (inner product over unit vectors)."""

    def __init__(self, directory: Path, dimension: int, settings: VectorIndexSettings) -> None:
        self._dir = directory
        self._dim = dimension
        self._settings = settings
        self._graphs: dict[str, _CollectionGraph] = {}
        self._graphs_lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)

    def _graph(self, collection_id: str) -> _CollectionGraph:
        with self._graphs_lock:
            graph = self._graphs.get(collection_id)
            if graph is None:
                graph = _CollectionGraph(self._dir / f"{collection_id}.hnsw", self._dim, self._settings)
                self._graphs[collection_id] = graph
            return graph

    def upsert(self, collection_id: str, ids: Sequence[int], vectors: Vectors) -> None:
        if not len(ids):
            return
        graph = self._graph(collection_id)
        with graph.lock:
            graph.ensure_capacity(len(ids))
            graph.index.add_items(
                np.asarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64), replace_deleted=True
            )
            graph.live.update(int(i) for i in ids)
            graph.dirty = True

    def delete(self, collection_id: str, ids: Sequence[int]) -> None:
        graph = self._graph(collection_id)
        with graph.lock:
            for chunk_id in ids:
                if chunk_id in graph.live:
                    # A loaded file lists labels deleted before it was saved: those are already gone.
                    with contextlib.suppress(RuntimeError):
                        graph.index.mark_deleted(int(chunk_id))
                    graph.live.discard(chunk_id)
                    graph.dirty = True

    def drop(self, collection_id: str) -> None:
        with self._graphs_lock:
            graph = self._graphs.pop(collection_id, None)
            path = self._dir / f"{collection_id}.hnsw"
            if graph is not None:
                with graph.lock:
                    path.unlink(missing_ok=True)
            else:
                path.unlink(missing_ok=True)

    def ids(self, collection_id: str) -> set[int]:
        graph = self._graph(collection_id)
        with graph.lock:
            return set(graph.live)

    def search(
        self, collection_id: str, query: Vectors, k: int, allowed_ids: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        graph = self._graph(collection_id)
        q = np.asarray(query, dtype=np.float32).reshape(1, -1)
        with graph.lock:
            if allowed_ids is not None:
                allowed = [i for i in allowed_ids if i in graph.live]
                if len(allowed) <= self._settings.exact_search_max:
                    return self._exact(graph, q, k, allowed)
                allowed_set = set(allowed)
                return self._walk(graph, q, min(k, len(allowed)), allowed_set.__contains__, allowed)
            return self._walk(graph, q, min(k, len(graph.live)), None, None)

    def search_filtered(
        self, collection_id: str, query: Vectors, k: int, filters: SearchFilters, chunks: ChunkStore
    ) -> list[tuple[int, float]]:
        """The graph knows no metadata: the store says which chunks pass ``filters``."""
        return self.search(collection_id, query, k, chunks.chunk_ids(collection_id, filters))

    def _walk(
        self,
        graph: _CollectionGraph,
        q: Vectors,
        k: int,
        accept: object | None,
        allowed: list[int] | None,
    ) -> list[tuple[int, float]]:
        if k <= 0:
            return []
        graph.index.set_ef(max(self._settings.ef_search, k))
        try:
            labels, distances = graph.index.knn_query(q, k=k, num_threads=1, filter=accept)
        except RuntimeError:
            # hnswlib raises when the walk finds fewer than k acceptable nodes: answer exactly instead.
            return self._exact(graph, q, k, allowed if allowed is not None else sorted(graph.live))
        return [(int(label), 1.0 - float(dist)) for label, dist in zip(labels[0], distances[0], strict=True)]

    @staticmethod
    def _exact(graph: _CollectionGraph, q: Vectors, k: int, allowed: list[int]) -> list[tuple[int, float]]:
        if not allowed or k <= 0:
            return []
        vectors = np.asarray(graph.index.get_items(allowed, return_type="numpy"), dtype=np.float32)
        scores = vectors @ q[0]
        top = np.argsort(-scores)[:k] if len(allowed) <= k else np.argpartition(-scores, k)[:k]
        top = top[np.argsort(-scores[top])]
        return [(allowed[i], float(scores[i])) for i in top]

    def flush(self) -> None:
        with self._graphs_lock:
            graphs = list(self._graphs.values())
        for graph in graphs:
            with graph.lock:
                if not graph.dirty:
                    continue
                tmp = graph.path.with_suffix(".hnsw.tmp")
                graph.index.save_index(str(tmp))
                os.replace(tmp, graph.path)
                graph.dirty = False

    def catch_up(self, collection_id: str, chunks: ChunkStore, batch_size: int = 4096) -> tuple[int, int]:
        """Make the graph hold exactly the collection's chunks in the store; returns (added, removed)."""
        stored = set(chunks.chunk_ids(collection_id, SearchFilters()))
        indexed = self.ids(collection_id)
        missing = sorted(stored - indexed)
        extra = sorted(indexed - stored)
        self.delete(collection_id, extra)
        for i in range(0, len(missing), batch_size):
            batch = missing[i : i + batch_size]
            self.upsert(collection_id, batch, chunks.chunk_vectors(batch))
        if missing or extra:
            logger.info("vector index %s caught up: +%d -%d", collection_id, len(missing), len(extra))
        return len(missing), len(extra)
