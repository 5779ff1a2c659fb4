"""Keeps ``sparse_bm25`` snapshots of the FTS5 tables that are searched, current with the tables.

A snapshot answers only while its generation equals its table's (``fts_generations.py``); otherwise FTS5 answers,
exactly as before, and the index is queued for a rebuild in a daemon thread. The rebuild waits until no write
came for ``quiet_seconds`` (a bulk load does not rebuild after every document) but not longer than
``max_stale_seconds`` after the index went stale (a steady trickle of writes is still caught up). Snapshots of
all indexes together hold at most ``max_chunks`` rows; an index beyond that stays on FTS5.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence

from ragserve.errors import StoreError
from ragserve.observability.metrics import KEYWORD_REBUILD_DURATION, KEYWORD_SNAPSHOT_BYTES
from ragserve.stores.sparse_bm25 import Bm25Snapshot, read_snapshot
from ragserve.stores.sqlite_db import SqliteDatabase, fts_table

logger = logging.getLogger(__name__)


class KeywordAccelerator:
    """In-memory BM25 for the embedded store's unfiltered keyword searches. ``search`` and ``chunk_counts``
    return None when FTS5 must answer. ``close`` stops the rebuild thread."""

    def __init__(
        self,
        db: SqliteDatabase,
        max_chunks: int,
        quiet_seconds: float = 1.0,
        max_stale_seconds: float = 10.0,
    ) -> None:
        self._db = db
        self._max_chunks = max_chunks
        self._quiet_seconds = quiet_seconds
        self._max_stale_seconds = max_stale_seconds
        self._snapshots: dict[str, Bm25Snapshot] = {}
        self._wanted: dict[str, float] = {}  # index id -> when it was found (or left) stale, monotonic
        self._too_big: dict[str, int] = {}  # index id -> the generation found over the bound
        self._changed = threading.Condition()
        self._is_closed = False
        self._thread: threading.Thread | None = None

    def search(
        self, index_id: str, terms: Sequence[str], k: int, title_weight: float
    ) -> list[tuple[int, float]] | None:
        snapshot = self.current(index_id)
        return None if snapshot is None else snapshot.search(terms, k, title_weight)

    def chunk_counts(self, index_id: str, terms: Sequence[str]) -> dict[str, int] | None:
        snapshot = self.current(index_id)
        return None if snapshot is None else snapshot.chunk_counts(terms)

    @property
    def held(self) -> frozenset[str]:
        """The indexes whose snapshots are in memory now, current or not."""
        with self._changed:
            return frozenset(self._snapshots)

    def prepare(self, index_ids: Sequence[str]) -> None:
        """Queue snapshots of these indexes now (the active ones at start-up), not at their first search."""
        for index_id in index_ids:
            self.current(index_id)

    def current(self, index_id: str) -> Bm25Snapshot | None:
        """The index's snapshot if it matches the table now; else None, and a rebuild is queued."""
        generation = self._db.fts_generations.current(index_id)
        snapshot = self._snapshots.get(index_id)
        if snapshot is not None and snapshot.generation == generation:
            return snapshot
        with self._changed:
            if self._is_closed or self._too_big.get(index_id) == generation or index_id in self._wanted:
                return None
            self._wanted[index_id] = time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ragserve-keyword-accelerator", daemon=True)
                self._thread.start()
            self._changed.notify()
        return None

    def close(self) -> None:
        with self._changed:
            self._is_closed = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._snapshots.clear()
        KEYWORD_SNAPSHOT_BYTES.set(0)

    def _run(self) -> None:
        while True:
            with self._changed:
                if self._is_closed:
                    return
                due, wait_seconds = self._due()
                if not due:
                    self._changed.wait(wait_seconds)
                    continue
            for index_id in due:
                self._rebuild(index_id)

    def _due(self) -> tuple[list[str], float | None]:
        """Indexes to rebuild now, or how long to wait for the next one (None: until notified)."""
        now = time.monotonic()
        due: list[str] = []
        wait_seconds: float | None = None
        for index_id, stale_since in list(self._wanted.items()):
            snapshot = self._snapshots.get(index_id)
            if snapshot is not None and snapshot.generation == self._db.fts_generations.current(index_id):
                del self._wanted[index_id]
                continue
            quiet_left = self._db.fts_generations.changed_at(index_id) + self._quiet_seconds - now
            stale_left = stale_since + self._max_stale_seconds - now
            left = min(quiet_left, stale_left)
            if left <= 0:
                due.append(index_id)
            else:
                wait_seconds = left if wait_seconds is None else min(wait_seconds, left)
        return due, wait_seconds

    def _rebuild(self, index_id: str) -> None:
        self._drop_stale()
        generation = self._db.fts_generations.current(index_id)  # before the read: see fts_generations.py
        started = time.perf_counter()
        try:
            snapshot = self._read(index_id, generation)
        except (sqlite3.Error, StoreError) as exc:  # the table was dropped, or the store is closing
            logger.info("keyword accelerator: index %s stays on FTS5: %s", index_id, exc)
            snapshot = None
        with self._changed:
            if snapshot is None:
                self._snapshots.pop(index_id, None)
                self._wanted.pop(index_id, None)
            else:
                KEYWORD_REBUILD_DURATION.observe(time.perf_counter() - started)
                self._snapshots[index_id] = snapshot
                if snapshot.generation == self._db.fts_generations.current(index_id):
                    self._wanted.pop(index_id, None)
                else:  # written meanwhile: rebuild again, debounced from now
                    self._wanted[index_id] = time.monotonic()
            KEYWORD_SNAPSHOT_BYTES.set(sum(s.nbytes for s in self._snapshots.values()))

    def _drop_stale(self) -> None:
        """A snapshot that no longer matches its table never answers again: free it (and its share of
        ``max_chunks``) before building another, e.g. that of an index version deleted after a promotion."""
        with self._changed:
            for index_id, snapshot in list(self._snapshots.items()):
                if snapshot.generation != self._db.fts_generations.current(index_id):
                    del self._snapshots[index_id]
            KEYWORD_SNAPSHOT_BYTES.set(sum(s.nbytes for s in self._snapshots.values()))

    def _read(self, index_id: str, generation: int) -> Bm25Snapshot | None:
        others = sum(s.row_count for i, s in self._snapshots.items() if i != index_id)
        with self._db.reading() as conn:
            (rows,) = conn.execute(f"SELECT count(*) FROM {fts_table(index_id)}_docsize").fetchone()
            if others + int(rows) > self._max_chunks:
                with self._changed:
                    self._too_big[index_id] = generation
                logger.info("keyword accelerator: index %s has %d chunks, over the bound", index_id, rows)
                return None
            return read_snapshot(conn, index_id, generation)
