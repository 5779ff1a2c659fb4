"""An unfiltered keyword search in the SQLite store reads the collection's FTS5 index only.

It used to join every match to its chunk row before ranking, which made the keyword half of a hybrid search
3-4 times slower at 100,000 chunks (``bench/scale.py``). The tables a statement reads are seen by SQLite's
authorizer when the statement is prepared."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ragserve.domain import DocumentInput, IndexConfig, NewChunk, ParsedDocument, SearchFilters, TextBlock
from ragserve.stores.analyzer import analyze
from ragserve.stores.protocol import DocumentWrite
from ragserve.stores.sqlite import SqliteStore
from ragserve.stores.sqlite_db import SqliteDatabase
from ragserve.stores.sqlite_jobs import SqliteJobStore

CONFIG = IndexConfig(max_tokens=200, overlap_tokens=40, model="test-model")
TEXTS = ["statins lower cholesterol", "statins and muscle pain", "exercise and sleep"]


def _store(tmp_path: Path) -> tuple[SqliteDatabase, SqliteStore, str]:
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    store, jobs = SqliteStore(db, CONFIG), SqliteJobStore(db, CONFIG)
    jobs.create_job([DocumentInput(collection="c", text=" ".join(TEXTS), metadata={"kind": "a"})], None, None)
    (item,) = jobs.claim_items(1)
    vector = (np.ones(4, dtype=np.float32) / 2).tobytes()
    chunks = [NewChunk(i, text, None, None, 3, f"h{i}", vector) for i, text in enumerate(TEXTS)]
    parsed = ParsedDocument((TextBlock(" ".join(TEXTS)),))
    store.write_document(item, DocumentWrite("Title", "h", parsed, {item.collection_id: chunks}))
    return db, store, item.collection_id


def _tables_read(conn: sqlite3.Connection, search: Callable[[], object]) -> set[str]:
    tables: set[str] = set()

    def authorize(action: int, table: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_READ and table:
            tables.add(table)
        return sqlite3.SQLITE_OK

    conn.set_authorizer(authorize)
    try:
        search()
    finally:
        conn.set_authorizer(None)
    return tables


def test_unfiltered_keyword_search_reads_no_chunk_rows(tmp_path: Path) -> None:
    db, store, collection_id = _store(tmp_path)
    try:
        found: list[tuple[int, float]] = []
        with db.reading() as conn:  # the search, in this thread, reads through this lease
            tables = _tables_read(
                conn,
                lambda: found.extend(store.keyword_search(collection_id, analyze("statins"), 10, SearchFilters())),
            )
    finally:
        db.close()
    assert len(found) == 2  # the two chunks about statins
    assert "chunks" not in tables
    assert "documents" not in tables


def test_filtered_keyword_search_still_applies_the_filter(tmp_path: Path) -> None:
    db, store, collection_id = _store(tmp_path)
    try:
        matching = store.keyword_search(
            collection_id, analyze("statins"), 10, SearchFilters.from_mapping({"kind": "a"})
        )
        other = store.keyword_search(collection_id, analyze("statins"), 10, SearchFilters.from_mapping({"kind": "b"}))
    finally:
        db.close()
    assert len(matching) == 2
    assert other == []
