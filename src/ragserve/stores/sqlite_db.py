"""The SQLite database file: schema, per-thread connections in WAL mode, and serialised write transactions."""

from __future__ import annotations

import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ragserve.errors import StoreError

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS collections (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    retrieval TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    collection_id TEXT NOT NULL REFERENCES collections(id),
    external_id TEXT,
    title TEXT,
    source TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    content_hash TEXT,
    chunk_count INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS documents_external_id
    ON documents(collection_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS documents_collection ON documents(collection_id, created_at);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL REFERENCES documents(id),
    collection_id TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    section TEXT,
    page INTEGER,
    token_count INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks(document_id, ordinal);
CREATE INDEX IF NOT EXISTS chunks_collection ON chunks(collection_id, id);
CREATE TABLE IF NOT EXISTS embedding_cache (key TEXT PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    stage TEXT NOT NULL,
    total INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS job_items (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    seq INTEGER NOT NULL,
    document_id TEXT NOT NULL,
    status TEXT NOT NULL,
    payload BLOB,
    error TEXT,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX IF NOT EXISTS job_items_status ON job_items(status, job_id, seq);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


_COLLECTION_ID = re.compile(r"^[0-9a-f]{32}$")
# Terms are analysed before they reach FTS5 (``analyzer.py``); its tokenizer only splits on spaces.
_FTS_COLUMNS = "title, body, tokenize='unicode61 remove_diacritics 0'"


def fts_table(collection_id: str) -> str:
    """The name of a collection's FTS5 table. One table per collection keeps BM25's document frequencies and
    lengths to that collection."""
    if not _COLLECTION_ID.match(collection_id):
        raise StoreError(f"invalid collection id {collection_id!r}")
    return f"fts_{collection_id}"


def create_collection(conn: sqlite3.Connection, name: str) -> str:
    """The id of the collection called ``name``, created with its FTS5 table if missing (inside the caller's
    transaction)."""
    row = conn.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()
    if row is not None:
        return str(row[0])
    collection_id = uuid.uuid4().hex
    conn.execute("INSERT INTO collections(id, name, created_at) VALUES (?, ?, ?)", (collection_id, name, utc_now()))
    conn.execute(f"CREATE VIRTUAL TABLE {fts_table(collection_id)} USING fts5({_FTS_COLUMNS})")
    return collection_id


def _migrate(conn: sqlite3.Connection) -> None:
    """Schema 1 kept one FTS5 table for all collections (moved into per-collection tables here) and had no
    per-collection retrieval settings."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(collections)")}
    if "retrieval" not in columns:
        conn.execute("ALTER TABLE collections ADD COLUMN retrieval TEXT NOT NULL DEFAULT '{}'")
    has_global = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunks_fts'").fetchone()
    if has_global is None:
        return
    conn.execute("BEGIN IMMEDIATE")
    for (collection_id,) in conn.execute("SELECT id FROM collections").fetchall():
        fts = fts_table(collection_id)
        conn.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5({_FTS_COLUMNS})")
        conn.execute(
            f"INSERT INTO {fts}(rowid, title, body) SELECT f.rowid, f.title, f.body FROM chunks_fts f "
            "JOIN chunks c ON c.id = f.rowid WHERE c.collection_id = ?",
            (collection_id,),
        )
    conn.execute("DROP TABLE chunks_fts")
    conn.execute("COMMIT")


def utc_now() -> str:
    return datetime.now(UTC).isoformat()


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


class SqliteDatabase:
    """One database file shared by threads: each thread gets its own connection; writers take a lock so
    ``BEGIN IMMEDIATE`` never waits on another writer of this process."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._write_lock:
            conn = self.connection()
            # executescript commits on its own; the statements are idempotent.
            conn.executescript(_SCHEMA)
            _migrate(conn)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @property
    def path(self) -> Path:
        return self._path

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode: transactions are explicit)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open database {self._path}: {exc}") from exc
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA cache_size=-65536")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        with self._write_lock:
            conn = self.connection()
            if conn.in_transaction:  # nested use inside one transaction: join it
                yield conn
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
