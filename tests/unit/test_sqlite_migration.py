"""Opening a schema-1 database (one FTS5 table for all collections) moves its rows to per-collection tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ragserve.domain import IndexConfig, SearchFilters
from ragserve.stores.sqlite import SqliteStore
from ragserve.stores.sqlite_db import SqliteDatabase, fts_table
from ragserve.stores.sqlite_versions import SqliteIndexVersions


def test_schema_1_keyword_index_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    SqliteDatabase(path).close()  # the current tables
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        INSERT INTO collections(id, name, created_at)
            VALUES ('0123456789abcdef0123456789abcdef', 'c', '2026-01-01T00:00:00+00:00');
        CREATE VIRTUAL TABLE chunks_fts USING fts5(title, body, tokenize='unicode61 remove_diacritics 0');
        INSERT INTO documents(id, collection_id, status, created_at, updated_at)
            VALUES ('d', '0123456789abcdef0123456789abcdef', 'ready', 'now', 'now');
        INSERT INTO chunks(id, document_id, collection_id, ordinal, text, token_count, content_hash, vector)
            VALUES (7, 'd', '0123456789abcdef0123456789abcdef', 0, 'apples', 1, 'h', x'00');
        INSERT INTO chunks_fts(rowid, title, body) VALUES (7, '', 'appl');
        """
    )
    conn.commit()
    conn.close()

    db = SqliteDatabase(path)
    store = SqliteStore(db, IndexConfig(200, 40, "m"))
    hits = store.keyword_search("0123456789abcdef0123456789abcdef", ["appl"], 10, SearchFilters())
    assert [cid for cid, _ in hits] == [7]
    tables = {r[0] for r in db.connection().execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "chunks_fts" not in tables
    assert fts_table("0123456789abcdef0123456789abcdef") in tables
    # Schema 3: the collection's chunks become its index version 1, with the store's configuration.
    (v1,) = SqliteIndexVersions(db).live_versions("0123456789abcdef0123456789abcdef")
    assert (v1.index_id, v1.version, v1.config) == ("0123456789abcdef0123456789abcdef", 1, IndexConfig(200, 40, "m"))
    db.close()
