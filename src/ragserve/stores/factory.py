"""The stores of the configured backend (``store.backend``), opened together and closed together.

``sqlite``: one database file in the data directory and one HNSW file per index version beside it, written by
this process only, so the data directory is locked for the process's lifetime. ``postgres``: pools to the
primary and its read replicas, the schema migrated at start-up, the vectors a pgvector column of the chunks;
nothing is local, so any number of processes (API replicas, ingestion workers) share the database.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from typing import IO, Protocol

from ragserve.domain import Document, IndexConfig
from ragserve.errors import DataDirLockedError, StoreError
from ragserve.security.audit import AuditLog
from ragserve.settings import Settings
from ragserve.stores.job_records import OutboxPolicy
from ragserve.stores.protocol import (
    ApiKeyStore,
    ChunkStore,
    CollectionSettingsStore,
    DocumentStore,
    EmbeddingCache,
    IndexVersionStore,
    KeywordIndex,
    LeasedJobStore,
    RebuildSource,
    VectorIndex,
)


class ServiceStore(
    DocumentStore, ChunkStore, KeywordIndex, EmbeddingCache, CollectionSettingsStore, RebuildSource, Protocol
):
    """Everything the service asks of the document store."""

    def external_ids(self, collection: str) -> set[str]: ...

    def find_document(self, collection_id: str, external_id: str) -> Document | None: ...


class ServiceVectorIndex(VectorIndex, Protocol):
    def catch_up(self, collection_id: str, chunks: ChunkStore) -> tuple[int, int]:
        """Make the index hold exactly the collection's chunks in the store; returns (added, removed)."""
        ...


class StoreSet:
    """The stores of one backend. ``is_shared``: other processes can reach them (separate workers can)."""

    def __init__(
        self,
        *,
        store: ServiceStore,
        jobs: LeasedJobStore,
        versions: IndexVersionStore,
        index: ServiceVectorIndex,
        keys: ApiKeyStore,
        audit: AuditLog,
        ping: Callable[[], object],
        closers: list[Callable[[], object]],
        is_shared: bool,
    ) -> None:
        self.store, self.jobs, self.versions, self.index, self.keys = store, jobs, versions, index, keys
        self.audit = audit
        self.is_shared = is_shared
        self._ping = ping
        self._closers = closers

    def is_reachable(self) -> bool:
        try:
            self._ping()
        except Exception:  # any failure means "not reachable"; the readiness probe must answer, not raise
            return False
        return True

    def catch_up(self) -> None:
        """Bring the vector index of every live index version in line with the chunks."""
        for collection in self.store.list_collections():
            for version in self.versions.live_versions(collection.id):
                self.index.catch_up(version.index_id, self.store)

    def close(self) -> None:
        for close in self._closers:
            close()


def lock_data_dir(settings: Settings) -> IO[str]:
    """Hold an exclusive lock on the data directory for this process's lifetime: the HNSW files are written by
    one process only. Raises ``DataDirLockedError`` naming the holder."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(settings.data_dir / "ragserve.lock", "a+")  # noqa: SIM115 - held until close()
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise DataDirLockedError(
            f"the data directory {settings.data_dir} is in use by {holder}; stop it or use another RAGSERVE_DATA_DIR"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def claim_data_dir(settings: Settings) -> IO[str] | None:
    """What the backend must hold before anything else starts (before the model is loaded into the data
    directory): sqlite's data directory lock; None for postgres. Raises ``DataDirLockedError``."""
    return lock_data_dir(settings) if settings.store.backend == "sqlite" else None


def open_stores(settings: Settings, config: IndexConfig, dimension: int, claim: IO[str] | None) -> StoreSet:
    """Open the configured backend's stores; new collections get index version 1 configured by ``config``,
    vectors have ``dimension`` components; ``claim`` is ``claim_data_dir``'s, closed with the stores.
    Raises ``StoreError``."""
    outbox = OutboxPolicy(settings.queue.items_per_message, settings.queue.small_job_items)
    policy = outbox if settings.queue.backend == "rabbitmq" else None
    if settings.store.backend == "postgres":
        return _open_postgres(settings, config, dimension, policy)
    if claim is None:
        raise StoreError("the sqlite store needs the data directory's lock (claim_data_dir)")
    return _open_sqlite(settings, config, dimension, policy, claim)


def _open_sqlite(
    settings: Settings, config: IndexConfig, dimension: int, outbox: OutboxPolicy | None, lock: IO[str]
) -> StoreSet:
    from ragserve.stores.hnsw import HnswVectorIndex
    from ragserve.stores.keyword_accelerator import KeywordAccelerator
    from ragserve.stores.sqlite import SqliteStore
    from ragserve.stores.sqlite_audit import SqliteAuditLog
    from ragserve.stores.sqlite_db import SqliteDatabase
    from ragserve.stores.sqlite_jobs import SqliteJobStore
    from ragserve.stores.sqlite_keys import SqliteApiKeys
    from ragserve.stores.sqlite_versions import SqliteIndexVersions

    db = SqliteDatabase(
        settings.database_path, settings.store.sqlite_connections, settings.store.sqlite_cache_mb * 1024 * 1024
    )
    accelerator = (
        KeywordAccelerator(db, settings.store.keyword_accelerator_max_chunks)
        if settings.store.keyword_accelerator
        else None
    )
    store = SqliteStore(db, config, title_weight=settings.retrieval.title_weight, accelerator=accelerator)
    if accelerator is not None:
        accelerator.prepare(
            [str(r[0]) for r in db.fetchall("SELECT active_index FROM collections WHERE active_index IS NOT NULL")]
        )
    versions = SqliteIndexVersions(db)
    index = HnswVectorIndex(
        settings.index_dir,
        dimension,
        settings.vector_index,
        precision_of=versions.precision_of,
        full_vectors=store.chunk_vectors,
    )
    return StoreSet(
        store=store,
        jobs=SqliteJobStore(db, config, outbox),
        versions=versions,
        index=index,
        keys=SqliteApiKeys(db),
        audit=SqliteAuditLog(db),
        ping=lambda: db.fetchone("SELECT 1"),
        closers=[*([accelerator.close] if accelerator else []), db.close, lock.close],
        is_shared=False,
    )


def _open_postgres(settings: Settings, config: IndexConfig, dimension: int, outbox: OutboxPolicy | None) -> StoreSet:
    # psycopg, its pool and alembic are imported only where PostgreSQL is used.
    from ragserve.stores.pgvector import PgVectorIndex
    from ragserve.stores.postgres import PostgresStore
    from ragserve.stores.postgres_audit import PostgresAuditLog
    from ragserve.stores.postgres_db import PostgresDatabase, VectorIndexSpec, migrate
    from ragserve.stores.postgres_jobs import PostgresJobStore
    from ragserve.stores.postgres_keys import PostgresApiKeys
    from ragserve.stores.postgres_versions import PostgresIndexVersions

    store = settings.store
    if store.postgres_url is None:  # the settings' validator already refuses this
        raise StoreError("store.backend is postgres but store.postgres_url is not set")
    spec = VectorIndexSpec(
        dimension, store.vector_precision, settings.vector_index.m, settings.vector_index.ef_construction
    )
    url = store.postgres_url.get_secret_value()
    migrate(url, spec)
    db = PostgresDatabase(
        url, [u.get_secret_value() for u in store.postgres_read_urls], store.pool_min_size, store.pool_max_size
    )
    return StoreSet(
        store=PostgresStore(db, config, title_weight=settings.retrieval.title_weight),
        jobs=PostgresJobStore(db, config, outbox),
        versions=PostgresIndexVersions(db),
        index=PgVectorIndex(db, spec, settings.vector_index),
        keys=PostgresApiKeys(db),
        audit=PostgresAuditLog(db),
        ping=db.ping,
        closers=[db.close],
        is_shared=True,
    )


def open_key_store(settings: Settings) -> tuple[ApiKeyStore, Callable[[], object]]:
    """Just the API key store, and how to close it; no lock is taken, so the CLI can manage keys while the
    server runs (SQLite's WAL lets two processes write)."""
    if settings.store.backend == "postgres":
        # The servers own the schema (they migrate it at start); this only reads and writes keys.
        from ragserve.stores.postgres_db import PostgresDatabase
        from ragserve.stores.postgres_keys import PostgresApiKeys

        if settings.store.postgres_url is None:
            raise StoreError("store.backend is postgres but store.postgres_url is not set")
        db = PostgresDatabase(settings.store.postgres_url.get_secret_value(), [], 1, 2)
        return PostgresApiKeys(db), db.close
    from ragserve.stores.sqlite_db import SqliteDatabase
    from ragserve.stores.sqlite_keys import SqliteApiKeys

    sqlite = SqliteDatabase(settings.database_path)
    return SqliteApiKeys(sqlite), sqlite.close


def open_audit_log(settings: Settings) -> tuple[AuditLog, Callable[[], object]]:
    """Just the audit log, and how to close it; like ``open_key_store``, no lock is taken."""
    if settings.store.backend == "postgres":
        from ragserve.stores.postgres_audit import PostgresAuditLog
        from ragserve.stores.postgres_db import PostgresDatabase

        if settings.store.postgres_url is None:
            raise StoreError("store.backend is postgres but store.postgres_url is not set")
        db = PostgresDatabase(settings.store.postgres_url.get_secret_value(), [], 1, 2)
        return PostgresAuditLog(db), db.close
    from ragserve.stores.sqlite_audit import SqliteAuditLog
    from ragserve.stores.sqlite_db import SqliteDatabase

    sqlite = SqliteDatabase(settings.database_path)
    return SqliteAuditLog(sqlite), sqlite.close
