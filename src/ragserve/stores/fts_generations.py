"""Per-index generation counters of the embedded store's FTS5 tables, so that a copy of a table kept in memory
(``sparse_bm25.py``) knows whether it still matches the table.

A write transaction that changes an FTS5 table calls ``SqliteDatabase.note_fts_write``: the table's counter
goes up at once and again after the commit (or rollback). The first bump stops the copy from answering while
the write is in flight; the second makes stale a copy built from a read that began before the commit, whose
rows lack the write. Only this process writes (the data directory is locked), so counters in memory suffice.
"""

from __future__ import annotations

import threading
import time


class FtsGenerations:
    """Thread-safe counters keyed by index id, with the monotonic time of each index's last change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generations: dict[str, int] = {}
        self._changed_at: dict[str, float] = {}

    def bump(self, index_id: str) -> None:
        with self._lock:
            self._generations[index_id] = self._generations.get(index_id, 0) + 1
            self._changed_at[index_id] = time.monotonic()

    def current(self, index_id: str) -> int:
        """The index's generation now (0 until its first write in this process)."""
        with self._lock:
            return self._generations.get(index_id, 0)

    def changed_at(self, index_id: str) -> float:
        """``time.monotonic()`` of the index's last change in this process (0.0: none)."""
        with self._lock:
            return self._changed_at.get(index_id, 0.0)
