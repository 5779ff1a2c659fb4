"""The server vector index: pgvector over the ``vector`` column of the chunks table.

The vectors are written with their chunks (``write_document``), in the same transaction, and PostgreSQL keeps
the HNSW index in step with the rows, so there is no separate graph to save, catch up or drop: ``delete`` and
``drop`` have nothing to do (a chunk leaves the index with its row), ``flush`` neither, and ``upsert`` only
rewrites vectors that differ from the stored ones.

Search is exact (a scan of the candidates) when at most ``exact_search_max`` chunks pass the metadata filters,
as in SQLite's HNSW index, and an HNSW walk otherwise. The chunks of every collection share one index, so an
unfiltered search is exact too when its collection is small and a small part of the table. Filters are part of
the SQL, with ``hnsw.iterative_scan = relaxed_order``, so the walk goes on until enough chunks pass them
(pre-filtering): a selective filter never empties the result the way filtering the top k afterwards would.
The index is selected by ``store.vector_precision``: ``f32`` (``vector``, inner product), ``f16`` (a
``halfvec`` expression index) or ``binary`` (a ``bit`` expression index by Hamming distance; its top candidates
are rescored in full precision).
Returned scores are always full-precision inner products, so fusion sees the same scale at any precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ragserve.domain import SearchFilters
from ragserve.settings import VectorIndexSettings
from ragserve.stores.postgres_db import PostgresDatabase, VectorIndexSpec
from ragserve.stores.postgres_search import metadata_filter
from ragserve.stores.protocol import ChunkStore, Vectors

# pgvector's largest hnsw.ef_search; and how many Hamming-distance candidates a binary search rescores per hit.
_MAX_EF_SEARCH = 1000
# An unfiltered search walks the index when its collection holds at least this share of all chunks (the table's
# row estimate): then most chunks the walk meets are the collection's, as in a graph of its own.
_WALK_MIN_SHARE = 0.1
_BINARY_RESCORE_FACTOR = 4
_BINARY_MIN_CANDIDATES = 100


class PgVectorIndex:
    """Implements ``VectorIndex`` with pgvector; reads go to a read replica when there is one."""

    def __init__(self, db: PostgresDatabase, spec: VectorIndexSpec, settings: VectorIndexSettings) -> None:
        self._db = db
        self._spec = spec
        self._settings = settings

    def upsert(self, collection_id: str, ids: Sequence[int], vectors: Vectors) -> None:
        """Set the stored vectors of existing chunks (ingestion wrote the same ones already: no-op then)."""
        if not len(ids):
            return
        matrix = np.asarray(vectors, dtype=np.float32)
        rows = [(matrix[i], int(cid), collection_id, matrix[i]) for i, cid in enumerate(ids)]
        with self._db.write() as conn:
            conn.cursor().executemany(
                "UPDATE chunks SET vector = %s WHERE id = %s AND collection_id = %s AND vector IS DISTINCT FROM %s",
                rows,
            )

    def delete(self, collection_id: str, ids: Sequence[int]) -> None:
        """Nothing to do: deleting a chunk's row took it out of the index."""

    def drop(self, collection_id: str) -> None:
        """Nothing to do: deleting an index version deleted its chunks, and with them their index entries."""

    def flush(self) -> None:
        """Nothing to do: PostgreSQL made the index durable with each commit."""

    def catch_up(self, collection_id: str, chunks: ChunkStore) -> tuple[int, int]:
        """The index always holds exactly the chunks in the table: nothing is ever added or removed here."""
        return 0, 0

    def search(
        self, collection_id: str, query: Vectors, k: int, allowed_ids: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        if allowed_ids is None:
            return self._search(collection_id, query, k, "", "", [])
        if not allowed_ids:
            return []
        return self._search(collection_id, query, k, "", " AND c.id = ANY(%s)", [list(allowed_ids)])

    def search_filtered(
        self, collection_id: str, query: Vectors, k: int, filters: SearchFilters, chunks: ChunkStore
    ) -> list[tuple[int, float]]:
        """``search`` among the chunks whose document metadata satisfies ``filters``, in one SQL statement."""
        if not filters:
            return self.search(collection_id, query, k)
        clause, params = metadata_filter(filters)
        return self._search(collection_id, query, k, " JOIN documents d ON d.id = c.document_id", clause, params)

    def _search(
        self, collection_id: str, query: Vectors, k: int, join: str, where: str, params: list[object]
    ) -> list[tuple[int, float]]:
        if k <= 0:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        source = f"FROM chunks c{join} WHERE c.collection_id = %s{where}"
        exact_max = self._settings.exact_search_max
        with self._db.replica() as conn, conn.transaction():
            # Counting stops past the threshold, so this costs little even on a large collection.
            row = conn.execute(
                f"SELECT (SELECT count(*) FROM (SELECT 1 {source} LIMIT %s) AS passing), "
                "(SELECT reltuples FROM pg_class WHERE oid = 'chunks'::regclass)",
                [collection_id, *params, exact_max + 1],
            ).fetchone()
            passing, table_rows = (int(row[0]), float(row[1])) if row else (0, -1.0)
            if passing == 0:
                return []
            if passing <= exact_max and (where or table_rows < 0 or passing < _WALK_MIN_SHARE * table_rows):
                rows = conn.execute(
                    f"WITH candidates AS MATERIALIZED (SELECT c.id, c.vector {source}) "
                    "SELECT id, -(vector <#> %s) AS score FROM candidates ORDER BY score DESC, id LIMIT %s",
                    [collection_id, *params, q, k],
                ).fetchall()
            else:
                limit = self._candidates(k)
                # The walk is decided here, not by the planner: it does not count the cost of detoasting every
                # vector, and from about a hundred hits on it would scan and sort the whole collection instead.
                conn.execute(
                    "SELECT set_config('hnsw.ef_search', %s, true), "
                    "set_config('hnsw.iterative_scan', 'relaxed_order', true), "
                    "set_config('enable_seqscan', 'off', true), set_config('enable_sort', 'off', true)",
                    (str(min(_MAX_EF_SEARCH, max(self._settings.ef_search, limit))),),
                )
                spec = self._spec
                order = f"{spec.key('c.vector')} {spec.operator} {spec.key('%s::vector')}"
                # Relaxed order: the walk's results are nearly sorted, so they are sorted again outside.
                rows = conn.execute(
                    f"WITH nearest AS MATERIALIZED (SELECT c.id, c.vector {source} ORDER BY {order} LIMIT %s) "
                    "SELECT id, -(vector <#> %s) AS score FROM nearest ORDER BY score DESC, id LIMIT %s",
                    [collection_id, *params, q, limit, q, k],
                ).fetchall()
        return [(int(cid), float(score)) for cid, score in rows]

    def _candidates(self, k: int) -> int:
        if self._spec.precision == "binary":
            return max(k * _BINARY_RESCORE_FACTOR, _BINARY_MIN_CANDIDATES)
        return k
