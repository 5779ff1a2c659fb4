"""The SQLite database file: schema, a bounded pool of connections in WAL mode, and serialised write transactions."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ragserve.errors import StoreError
from ragserve.stores.fts_generations import FtsGenerations

SCHEMA_VERSION = 6

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS collections (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    retrieval TEXT NOT NULL DEFAULT '{}',
    active_index TEXT,
    canary_index TEXT,
    canary_share REAL NOT NULL DEFAULT 0,
    previous_index TEXT,
    tenant TEXT NOT NULL DEFAULT 'default',
    UNIQUE (tenant, name)
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
    updated_at TEXT NOT NULL,
    parsed BLOB,
    acl TEXT,
    restricted INTEGER NOT NULL DEFAULT 0
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
-- Covering: a search maps its ~600 candidate chunks to their documents from this index's dense pages, not
-- from the chunk rows (text and vector, about a page each), which took 40% of a loaded server's time at 100k.
CREATE INDEX IF NOT EXISTS chunks_id_document ON chunks(id, document_id);
CREATE TABLE IF NOT EXISTS embedding_cache (key TEXT PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    stage TEXT NOT NULL,
    total INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT 'default'
);
CREATE TABLE IF NOT EXISTS job_items (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    seq INTEGER NOT NULL,
    document_id TEXT NOT NULL,
    status TEXT NOT NULL,
    payload BLOB,
    error TEXT,
    lease_owner TEXT,
    lease_expires REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    seqs TEXT NOT NULL,
    priority INTEGER NOT NULL,
    created_at REAL NOT NULL,
    published_at REAL
);
CREATE INDEX IF NOT EXISTS job_items_status ON job_items(status, job_id, seq);
CREATE TABLE IF NOT EXISTS index_versions (
    index_id TEXT PRIMARY KEY,
    collection_id TEXT NOT NULL REFERENCES collections(id),
    version INTEGER NOT NULL,
    config TEXT NOT NULL,
    state TEXT NOT NULL,
    built INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (collection_id, version)
);
CREATE TABLE IF NOT EXISTS golden_sets (
    collection_id TEXT PRIMARY KEY REFERENCES collections(id),
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tenant TEXT NOT NULL,
    scopes TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    user TEXT,
    groups TEXT NOT NULL DEFAULT '[]'
);
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


def fts_table(index_id: str) -> str:
    """The name of an index version's FTS5 table. One table per collection (and index version) keeps BM25's
    document frequencies and lengths to that collection. Version 1's index id is the collection's id."""
    if not _COLLECTION_ID.match(index_id):
        raise StoreError(f"invalid index id {index_id!r}")
    return f"fts_{index_id}"


def create_fts_table(conn: sqlite3.Connection, index_id: str) -> None:
    conn.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS {fts_table(index_id)} USING fts5({_FTS_COLUMNS})")


def create_collection(conn: sqlite3.Connection, name: str, tenant: str, config_json: str) -> str:
    """The id of the tenant's collection called ``name``, created if missing with its index version 1
    (configured by ``config_json``) and that version's FTS5 table (inside the caller's transaction)."""
    row = conn.execute("SELECT id FROM collections WHERE tenant = ? AND name = ?", (tenant, name)).fetchone()
    if row is not None:
        return str(row[0])
    collection_id = uuid.uuid4().hex
    now = utc_now()
    conn.execute(
        "INSERT INTO collections(id, name, tenant, created_at, active_index) VALUES (?, ?, ?, ?, ?)",
        (collection_id, name, tenant, now, collection_id),
    )
    conn.execute(
        "INSERT INTO index_versions(index_id, collection_id, version, config, state, created_at) "
        "VALUES (?, ?, 1, ?, 'ready', ?)",
        (collection_id, collection_id, config_json, now),
    )
    create_fts_table(conn, collection_id)
    return collection_id


def backfill_index_versions(conn: sqlite3.Connection, config_json: str) -> None:
    """Give collections made before index versions existed their version 1 (their chunks are its chunks)."""
    conn.execute(
        "INSERT INTO index_versions(index_id, collection_id, version, config, state, created_at) "
        "SELECT id, id, 1, ?, 'ready', created_at FROM collections "
        "WHERE id NOT IN (SELECT collection_id FROM index_versions)",
        (config_json,),
    )
    conn.execute("UPDATE collections SET active_index = id WHERE active_index IS NULL")


_ADDED_COLUMNS = {
    "collections": (
        ("retrieval", "TEXT NOT NULL DEFAULT '{}'"),
        ("active_index", "TEXT"),
        ("canary_index", "TEXT"),
        ("canary_share", "REAL NOT NULL DEFAULT 0"),
        ("previous_index", "TEXT"),
    ),
    "documents": (("parsed", "BLOB"), ("acl", "TEXT"), ("restricted", "INTEGER NOT NULL DEFAULT 0")),
    "job_items": (("lease_owner", "TEXT"), ("lease_expires", "REAL"), ("attempts", "INTEGER NOT NULL DEFAULT 0")),
    "jobs": (("tenant", "TEXT NOT NULL DEFAULT 'default'"),),
    "api_keys": (("user", "TEXT"), ("groups", "TEXT NOT NULL DEFAULT '[]'")),
}

_COLLECTIONS_V6 = """
CREATE TABLE collections_v6 (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    retrieval TEXT NOT NULL DEFAULT '{}',
    active_index TEXT,
    canary_index TEXT,
    canary_share REAL NOT NULL DEFAULT 0,
    previous_index TEXT,
    tenant TEXT NOT NULL DEFAULT 'default',
    UNIQUE (tenant, name)
);
INSERT INTO collections_v6(id, name, created_at, retrieval, active_index, canary_index, canary_share, previous_index)
    SELECT id, name, created_at, retrieval, active_index, canary_index, canary_share, previous_index FROM collections;
DROP TABLE collections;
ALTER TABLE collections_v6 RENAME TO collections;
"""


def _add_tenants(conn: sqlite3.Connection) -> None:
    """Schema 5 had globally unique collection names; from 6 a name is unique within its tenant, and every
    existing collection belongs to the default tenant. SQLite cannot drop a UNIQUE constraint, so the table
    is rebuilt (with foreign keys off, as SQLite's ALTER TABLE procedure asks)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(collections)")}
    if "tenant" in columns:
        return
    conn.execute("PRAGMA foreign_keys=OFF")
    try:
        conn.execute("BEGIN IMMEDIATE")
        for statement in _COLLECTIONS_V6.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("COMMIT")
    finally:
        conn.execute("PRAGMA foreign_keys=ON")


def _migrate(conn: sqlite3.Connection) -> None:
    """Schema 1 kept one FTS5 table for all collections (moved into per-collection tables here) and had no
    per-collection retrieval settings; schema 2 had no index versions and kept no parsed documents; schema 3 had no
    job leases and no outbox; schema 5 had no tenants and no document ACLs."""
    _add_tenants(conn)
    for table, added in _ADDED_COLUMNS.items():
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, declaration in added:
            if name not in columns:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")
    conn.execute("CREATE INDEX IF NOT EXISTS documents_restricted ON documents(collection_id, restricted)")
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
    """One database file shared by threads through at most ``max_connections`` connections in WAL mode.

    A thread leases a connection for the length of a ``reading()`` or ``write()`` block and gives it back at
    the end; blocks nested in one thread share its lease. The bound matters because each connection keeps
    its own page cache: one connection per thread grew with every thread that ever touched the store (the
    HTTP server's thread pool, the retrieval pool, workers), and a thread that exited left its connection
    open. ``cache_bytes`` is the page cache of all connections together. Writers also take a lock, so
    ``BEGIN IMMEDIATE`` never waits on another writer of this process."""

    def __init__(
        self,
        path: Path,
        max_connections: int = 8,
        cache_bytes: int = 64 * 1024 * 1024,
        wait_seconds: float = 30.0,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self._path = path
        self._max_connections = max_connections
        # PRAGMA cache_size in KiB when negative; at least 2 MiB, SQLite's own default, per connection.
        self._cache_kib = max(2048, cache_bytes // max_connections // 1024)
        self._wait_seconds = wait_seconds
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self.fts_generations = FtsGenerations()
        self._fts_written: set[str] = set()  # by the open write transaction; guarded by _write_lock
        self._idle: list[sqlite3.Connection] = []
        self._opened: list[sqlite3.Connection] = []
        self._opening = 0
        self._available = threading.Condition()
        self._is_closed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.reading() as conn, self._write_lock:
            # executescript commits on its own; the statements are idempotent.
            conn.executescript(_SCHEMA)
            _migrate(conn)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @property
    def path(self) -> Path:
        return self._path

    @property
    def open_connections(self) -> int:
        """Connections open now (never more than ``max_connections``)."""
        with self._available:
            return len(self._opened)

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads (autocommit: each statement sees the latest commit), leased to this thread
        until the block ends; read every row inside the block. Raises ``StoreError`` once the database is
        closed, or when no connection was free within ``wait_seconds``."""
        held: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if held is not None:
            yield held
            return
        conn = self._lease()
        self._local.conn = conn
        try:
            yield conn
        finally:
            self._local.conn = None
            self._give_back(conn)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        # The lease before the lock, as in a write nested in a read block: one order, no deadlock.
        with self.reading() as conn, self._write_lock:
            if conn.in_transaction:  # nested use inside one transaction: join it
                yield conn
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                for index_id in self._fts_written:
                    self.fts_generations.bump(index_id)
                self._fts_written.clear()

    def note_fts_write(self, index_id: str) -> None:
        """Record, inside a ``write()`` block, that it changes the index's FTS5 table (``fts_generations.py``)."""
        self.fts_generations.bump(index_id)
        self._fts_written.add(index_id)

    def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """Every row of one read statement, on a leased connection."""
        with self.reading() as conn:
            return conn.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Sequence[object] = ()) -> Any:
        """The first row of one read statement (None if there is none), on a leased connection."""
        with self.reading() as conn:
            return conn.execute(sql, params).fetchone()

    def _lease(self) -> sqlite3.Connection:
        deadline = time.monotonic() + self._wait_seconds
        with self._available:
            while True:
                if self._is_closed:
                    raise StoreError(f"the database {self._path} is closed")
                if self._idle:
                    # The most recently used connection first: its page cache is the warmest.
                    return self._idle.pop()
                if len(self._opened) + self._opening < self._max_connections:
                    self._opening += 1  # opened outside the lock: others may lease and give back meanwhile
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreError(
                        f"all {self._max_connections} connections to {self._path} stayed busy for "
                        f"{self._wait_seconds:g} s"
                    )
                self._available.wait(left)
        conn: sqlite3.Connection | None = None
        try:
            conn = self._open()
        finally:
            with self._available:
                self._opening -= 1
                if conn is not None:
                    self._opened.append(conn)
                self._available.notify()
        return conn

    def _give_back(self, conn: sqlite3.Connection) -> None:
        is_usable = True
        if conn.in_transaction:  # a block that left a transaction open must not hand it to the next thread
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                is_usable = False
        with self._available:
            if self._is_closed or not is_usable:
                conn.close()
                self._opened.remove(conn)
            else:
                self._idle.append(conn)
            self._available.notify()

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self._path}: {exc}") from exc
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA cache_size=-{self._cache_kib}")
        return conn

    def close(self) -> None:
        """Close every idle connection now and each leased one as it comes back; later use raises
        ``StoreError`` instead of reopening the file."""
        with self._available:
            self._is_closed = True
            for conn in self._idle:
                conn.close()
            self._opened = [conn for conn in self._opened if conn not in self._idle]
            self._idle.clear()
            self._available.notify_all()
