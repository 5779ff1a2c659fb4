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
    tables = {r[0] for r in db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "chunks_fts" not in tables
    assert fts_table("0123456789abcdef0123456789abcdef") in tables
    # Schema 3: the collection's chunks become its index version 1, with the store's configuration.
    (v1,) = SqliteIndexVersions(db).live_versions("0123456789abcdef0123456789abcdef")
    assert (v1.index_id, v1.version, v1.config) == ("0123456789abcdef0123456789abcdef", 1, IndexConfig(200, 40, "m"))
    db.close()


def test_schema_5_collections_move_to_the_default_tenant(tmp_path: Path) -> None:
    """Schema 5 made collection names unique across the database; opening it keeps every row, puts each
    collection in the default tenant and lets another tenant use the same name."""
    path = tmp_path / "v5.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE collections (
            id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL,
            retrieval TEXT NOT NULL DEFAULT '{}', active_index TEXT, canary_index TEXT,
            canary_share REAL NOT NULL DEFAULT 0, previous_index TEXT
        );
        CREATE TABLE documents (
            id TEXT PRIMARY KEY, collection_id TEXT NOT NULL REFERENCES collections(id), external_id TEXT,
            title TEXT, source TEXT, metadata TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL, content_hash TEXT,
            chunk_count INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, parsed BLOB
        );
        INSERT INTO collections(id, name, created_at, retrieval, active_index)
            VALUES ('0123456789abcdef0123456789abcdef', 'handbook', '2026-01-01T00:00:00+00:00',
                    '{"hybrid_alpha": 0.7}', '0123456789abcdef0123456789abcdef');
        INSERT INTO documents(id, collection_id, status, created_at, updated_at)
            VALUES ('d', '0123456789abcdef0123456789abcdef', 'ready', '2026-01-01T00:00:00+00:00',
                    '2026-01-01T00:00:00+00:00');
        """
    )
    conn.commit()
    conn.close()

    db = SqliteDatabase(path)
    store = SqliteStore(db, IndexConfig(200, 40, "m"))
    found = store.get_collection("handbook")
    assert (found.id, found.tenant) == ("0123456789abcdef0123456789abcdef", "default")
    assert store.get_retrieval_overrides(found.id) == {"hybrid_alpha": 0.7}
    assert store.get_document("d").tenant == "default"
    assert store.ensure_collection("handbook", "acme").id != found.id  # the name is free in another tenant
    assert db.fetchall("PRAGMA foreign_key_check") == []
    db.close()
