"""A document write into the SQLite store costs the same however many chunks its collection already holds.

SQLite picked the ``chunks_collection`` index for the lookup of a document's existing chunks (it also gives
their ``ORDER BY id``), so every write walked all of the collection's chunks: ingestion slowed down
quadratically (from 150 to under 50 chunks/s between 10,000 and 30,000 chunks in ``bench/scale.py``). The
cost is counted in SQLite virtual-machine steps, which are deterministic, not in time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ragserve.domain import DocumentInput, IndexConfig, NewChunk, ParsedDocument, TextBlock
from ragserve.stores.protocol import DocumentWrite
from ragserve.stores.sqlite import SqliteStore
from ragserve.stores.sqlite_db import SqliteDatabase
from ragserve.stores.sqlite_jobs import SqliteJobStore

CONFIG = IndexConfig(max_tokens=200, overlap_tokens=40, model="test-model")
STEPS_PER_TICK = 100


def _steps(conn: sqlite3.Connection, action: Callable[[], object]) -> int:
    ticks = 0

    def tick() -> int:
        nonlocal ticks
        ticks += 1
        return 0  # go on

    conn.set_progress_handler(tick, STEPS_PER_TICK)
    try:
        action()
    finally:
        conn.set_progress_handler(None, 0)
    return ticks * STEPS_PER_TICK


def _chunks(doc: int, count: int) -> list[NewChunk]:
    vector = np.ones(4, dtype=np.float32) / 2
    return [
        NewChunk(i, f"document {doc} chunk {i} text", None, None, 5, f"hash-{doc}-{i}", vector.tobytes())
        for i in range(count)
    ]


def _write_document(db: SqliteDatabase, store: SqliteStore, jobs: SqliteJobStore, doc: int, chunks: int) -> int:
    """Ingest one document of ``chunks`` chunks; returns the VM steps of its ``write_document``."""
    jobs.create_job([DocumentInput(collection="c", text=f"document {doc}")], None, None)
    (item,) = jobs.claim_items(1)
    parsed = ParsedDocument((TextBlock("x"),))
    write = DocumentWrite("Title", f"h{doc}", parsed, {item.collection_id: _chunks(doc, chunks)})
    with db.reading() as conn:  # the write, in this thread, goes through this lease
        return _steps(conn, lambda: store.write_document(item, write))


def test_a_document_write_does_not_walk_the_collections_chunks(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    store, jobs = SqliteStore(db, CONFIG), SqliteJobStore(db, CONFIG)
    costs: dict[int, int] = {}
    try:
        for doc in range(400):
            costs[doc] = _write_document(db, store, jobs, doc, 10)
    finally:
        db.close()
    # The least of a few writes, so that an occasional FTS5 segment merge does not decide the comparison.
    with_1000_chunks = min(costs[doc] for doc in range(100, 105))
    with_3950_chunks = min(costs[doc] for doc in range(395, 400))
    assert with_3950_chunks < 1.5 * with_1000_chunks, (with_1000_chunks, with_3950_chunks)
