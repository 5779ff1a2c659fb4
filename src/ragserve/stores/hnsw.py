"""The embedded vector index: one hnswlib HNSW graph per collection, saved as a file beside the database.

The graph is derived data. It is saved every few seconds when it changed and at shutdown; after a crash,
``catch_up`` re-adds from SQLite whatever the file is missing and drops what SQLite no longer has.
Filtered search is exact (a matrix product over the allowed vectors) when few chunks pass the filter, and
an HNSW walk restricted to the allowed ids otherwise: post-filtering would lose recall.

Each index version has a precision (its ``IndexConfig.precision``). ``f32`` is the HNSW graph above, in
``<index id>.hnsw``. ``f16``, ``int8`` and ``binary`` keep compact codes instead (``CodeTable``, in
``<index id>.<precision>.codes``): a scan of the codes, restricted to the allowed ids before scoring, picks
``max(k, rescore_min_candidates)`` candidates (binary: ``max(k * rescore_factor, rescore_min_candidates)``),
whose stored float32 vectors are read from the database to rescore them. Returned scores are always
full-precision inner products, at every precision.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import hnswlib
import numpy as np

from ragserve.domain import SearchFilters, VectorPrecision
from ragserve.errors import NotFoundError, StoreError
from ragserve.settings import VectorIndexSettings
from ragserve.stores.code_table import CodeTable
from ragserve.stores.protocol import ChunkStore, Vectors

logger = logging.getLogger(__name__)

_INITIAL_CAPACITY = 1024
_PRECISIONS: tuple[VectorPrecision, ...] = ("f32", "f16", "int8", "binary")

# An index version's precision (None: not known to the database, use ``vector_index.precision``).
PrecisionLookup = Callable[[str], VectorPrecision | None]
# The stored float32 vectors of chunk ids, in order (``ChunkStore.chunk_vectors``); raises ``NotFoundError``.
VectorSource = Callable[[Sequence[int]], Vectors]


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

    def add(self, ids: Sequence[int], vectors: Vectors) -> None:
        needed = self.index.get_current_count() + len(ids)
        capacity = self.index.get_max_elements()
        if needed > capacity:
            self.index.resize_index(max(needed, capacity * 2))
        self.index.add_items(
            np.asarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64), replace_deleted=True
        )
        self.live.update(int(i) for i in ids)
        self.dirty = True

    def remove(self, ids: Sequence[int]) -> None:
        for chunk_id in ids:
            if chunk_id in self.live:
                # A loaded file lists labels deleted before it was saved: those are already gone.
                with contextlib.suppress(RuntimeError):
                    self.index.mark_deleted(int(chunk_id))
                self.live.discard(chunk_id)
                self.dirty = True

    def save(self) -> None:
        tmp = self.path.with_suffix(".hnsw.tmp")
        self.index.save_index(str(tmp))
        os.replace(tmp, self.path)
        self.dirty = False


def index_path(directory: Path, index_id: str, precision: VectorPrecision) -> Path:
    """Where an index version's vectors are saved (f32's name is the one files had before precisions)."""
    return directory / (f"{index_id}.hnsw" if precision == "f32" else f"{index_id}.{precision}.codes")


class HnswVectorIndex:
    """Implements ``VectorIndex``: hnswlib at f32, rescored code tables at f16, int8 and binary.

    ``precision_of`` says each index version's precision (default: ``settings.precision`` for all);
    ``full_vectors`` reads the stored vectors that rescoring needs (required for any precision but f32)."""

    def __init__(
        self,
        directory: Path,
        dimension: int,
        settings: VectorIndexSettings,
        *,
        precision_of: PrecisionLookup | None = None,
        full_vectors: VectorSource | None = None,
    ) -> None:
        self._dir = directory
        self._dim = dimension
        self._settings = settings
        self._precision_of = precision_of
        self._full_vectors = full_vectors
        self._graphs: dict[str, _CollectionGraph | CodeTable] = {}
        self._graphs_lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)

    def precision(self, collection_id: str) -> VectorPrecision:
        """The precision ``collection_id``'s vectors are (or will be) kept at."""
        found = self._precision_of(collection_id) if self._precision_of is not None else None
        return found or self._settings.precision

    def _graph(self, collection_id: str) -> _CollectionGraph | CodeTable:
        with self._graphs_lock:
            graph = self._graphs.get(collection_id)
            if graph is None:
                precision = self.precision(collection_id)
                path = index_path(self._dir, collection_id, precision)
                if precision == "f32":
                    graph = _CollectionGraph(path, self._dim, self._settings)
                elif self._full_vectors is None:
                    raise StoreError(f"vector precision {precision} needs the stored vectors to rescore with")
                else:
                    graph = CodeTable(path, precision, self._dim)
                self._graphs[collection_id] = graph
            return graph

    def upsert(self, collection_id: str, ids: Sequence[int], vectors: Vectors) -> None:
        if not len(ids):
            return
        graph = self._graph(collection_id)
        with graph.lock:
            graph.add(ids, vectors)

    def delete(self, collection_id: str, ids: Sequence[int]) -> None:
        graph = self._graph(collection_id)
        with graph.lock:
            graph.remove(ids)

    def drop(self, collection_id: str) -> None:
        with self._graphs_lock:
            graph = self._graphs.pop(collection_id, None)
            with graph.lock if graph is not None else contextlib.nullcontext():
                for precision in _PRECISIONS:
                    index_path(self._dir, collection_id, precision).unlink(missing_ok=True)

    def ids(self, collection_id: str) -> set[int]:
        graph = self._graph(collection_id)
        with graph.lock:
            return set(graph.live)

    def search(
        self, collection_id: str, query: Vectors, k: int, allowed_ids: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        graph = self._graph(collection_id)
        q = np.asarray(query, dtype=np.float32).reshape(1, -1)
        if isinstance(graph, CodeTable):
            return self._search_codes(graph, q[0], k, allowed_ids)
        with graph.lock:
            if allowed_ids is not None:
                allowed = [i for i in allowed_ids if i in graph.live]
                if len(allowed) <= self._settings.exact_search_max:
                    return self._exact(graph, q, k, allowed)
                allowed_set = set(allowed)
                return self._walk(graph, q, min(k, len(allowed)), allowed_set.__contains__, allowed)
            return self._walk(graph, q, min(k, len(graph.live)), None, None)

    def _search_codes(
        self, table: CodeTable, q: Vectors, k: int, allowed_ids: Sequence[int] | None
    ) -> list[tuple[int, float]]:
        if k <= 0:
            return []
        # f16 and int8 codes already order the collection as f32 does to within a few places at the k-th hit
        # (bench/vector_precision.py): rescoring their top k puts those right and gives the true scores. Binary
        # codes order only coarsely, so more candidates are rescored; each costs a read from the database.
        factor = self._settings.rescore_factor if table.precision == "binary" else 1
        n = max(k * factor, self._settings.rescore_min_candidates)
        with table.lock:
            candidates = table.candidates(q, n, allowed_ids)
        # Outside the lock: the database read must not hold up writers of the table.
        ids, vectors = self._stored_vectors(candidates)
        if not ids:
            return []
        scores = vectors @ q
        top = np.argsort(-scores, kind="stable")[:k]
        return [(ids[i], float(scores[i])) for i in top]

    def _stored_vectors(self, ids: list[int]) -> tuple[list[int], Vectors]:
        """The stored vectors of ``ids``, without those whose chunk was deleted since the scan chose it."""
        assert self._full_vectors is not None  # _graph refuses a code table without it
        if not ids:
            return [], np.zeros((0, self._dim), dtype=np.float32)
        try:
            return ids, np.asarray(self._full_vectors(ids), dtype=np.float32)
        except NotFoundError:
            kept: list[int] = []
            rows: list[Vectors] = []
            for cid in ids:
                with contextlib.suppress(NotFoundError):
                    rows.append(np.asarray(self._full_vectors([cid]), dtype=np.float32)[0])
                    kept.append(cid)
            return kept, np.stack(rows) if rows else np.zeros((0, self._dim), dtype=np.float32)

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
                if graph.dirty:
                    graph.save()

    def index_bytes(self, collection_id: str) -> int:
        """Bytes of the saved file of ``collection_id``'s vectors (0 before its first flush)."""
        path = index_path(self._dir, collection_id, self.precision(collection_id))
        return path.stat().st_size if path.exists() else 0

    def memory_bytes(self, collection_id: str) -> int | None:
        """Bytes ``collection_id``'s code table holds in memory (None at f32: the graph's are its file's)."""
        graph = self._graph(collection_id)
        with graph.lock:
            return graph.nbytes() if isinstance(graph, CodeTable) else None

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
