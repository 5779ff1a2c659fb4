"""PostgreSQL for the server backend: connection pools, migrations at start-up, and read replicas.

The store seams are synchronous and are called from worker threads (``anyio.to_thread``), so this uses
psycopg 3's synchronous ``psycopg_pool.ConnectionPool``: one for the primary and one per read replica.
Writes, and reads that must see the latest writes (jobs, documents, index routes), use the primary; reads
that tolerate replica lag (the keyword and dense halves of a search, its hits) go round-robin to the replicas.

The schema is alembic's (``migrations/``), upgraded by ``migrate`` under a PostgreSQL advisory lock, so that
replicas starting at once migrate once: the first takes the lock and upgrades, the others wait for it and find
nothing left to do. The first migration creates the ``vector`` extension (pgvector 0.8 or later); where the
role may not create extensions, an administrator runs ``CREATE EXTENSION vector`` first. psycopg and pool errors
become ``StoreError`` here and nowhere else.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
import psycopg_pool
import sqlalchemy
from alembic import command
from alembic.config import Config
from pgvector.psycopg import register_vector
from sqlalchemy.pool import NullPool

from ragserve.errors import RagserveError, StoreError

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[tuple[Any, ...]]
Precision = Literal["f32", "f16", "binary"]

# pg_advisory_xact_lock key: "ragserve" in ASCII, so that other applications' locks never collide with it.
_MIGRATION_LOCK = int.from_bytes(b"ragserve", "big")
_MIGRATIONS = Path(__file__).parent / "migrations"
_CONNECT_TIMEOUT_SECONDS = 30.0
_PGVECTOR_MIN = (0, 8)


@dataclass(frozen=True, slots=True)
class VectorIndexSpec:
    """The pgvector HNSW index to keep on ``chunks``: its precision and build parameters."""

    dimension: int
    precision: Precision = "f32"
    m: int = 16
    ef_construction: int = 64

    @property
    def name(self) -> str:
        return f"chunks_vector_{self.precision}"

    def key(self, column: str) -> str:
        """The indexed expression over a vector ``column`` (or parameter): queries must order by the same."""
        if self.precision == "f16":
            return f"({column})::halfvec({self.dimension})"
        if self.precision == "binary":
            return f"binary_quantize({column})::bit({self.dimension})"
        return column

    @property
    def operator(self) -> str:
        return "<~>" if self.precision == "binary" else "<#>"

    def create_sql(self) -> str:
        opclass = {"f32": "vector_ip_ops", "f16": "halfvec_ip_ops", "binary": "bit_hamming_ops"}[self.precision]
        expression = "vector" if self.precision == "f32" else f"({self.key('vector')})"
        return (
            f"CREATE INDEX IF NOT EXISTS {self.name} ON chunks USING hnsw ({expression} {opclass}) "
            f"WITH (m = {int(self.m)}, ef_construction = {int(self.ef_construction)})"
        )


def utc_now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """Turn psycopg and pool errors into ``StoreError`` (ragserve's own errors pass through)."""
    try:
        yield
    except RagserveError:
        raise
    except psycopg_pool.PoolTimeout as exc:
        raise StoreError(f"{what}: no PostgreSQL connection within the pool timeout ({exc})") from exc
    except psycopg.Error as exc:
        raise StoreError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StoreError(f"{what}: {type(exc).__name__}: {exc}") from exc


def migrate(url: str, spec: VectorIndexSpec) -> None:
    """Upgrade the schema to alembic's head and make sure the vector index of ``spec`` exists, holding the
    migration lock throughout. Raises ``StoreError`` (also when the database keeps vectors of another
    dimension than ``spec.dimension``)."""
    engine = sqlalchemy.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(url), poolclass=NullPool)
    try:
        with translated_errors("migrating the PostgreSQL schema"), engine.begin() as conn:
            # A transaction-scoped lock: released by the commit (or by the rollback of a failed migration).
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config = Config()
            config.set_main_option("script_location", str(_MIGRATIONS))
            config.attributes["connection"] = conn
            config.attributes["vector_dimension"] = spec.dimension
            command.upgrade(config, "head")
            _check_pgvector(conn)
            _check_dimension(conn, spec.dimension)
            _ensure_vector_index(conn, spec)
    finally:
        engine.dispose()


def _check_pgvector(conn: sqlalchemy.Connection) -> None:
    version = conn.execute(sqlalchemy.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
    numbers = tuple(int(part) for part in str(version).split(".")[:2] if part.isdigit())
    if numbers < _PGVECTOR_MIN:
        raise StoreError(
            f"pgvector {version} is installed; ragserve needs {'.'.join(map(str, _PGVECTOR_MIN))} or later "
            "(iterative index scans, halfvec and bit indexes)"
        )


def _check_dimension(conn: sqlalchemy.Connection, dimension: int) -> None:
    stored = conn.execute(
        sqlalchemy.text("SELECT atttypmod FROM pg_attribute WHERE attrelid = 'chunks'::regclass AND attname = 'vector'")
    ).scalar_one()
    if int(stored) != dimension:
        raise StoreError(
            f"the PostgreSQL database keeps {stored}-dimension vectors but the embedding model makes {dimension}; "
            "use another database (store.postgres_url) for this model"
        )


def _ensure_vector_index(conn: sqlalchemy.Connection, spec: VectorIndexSpec) -> None:
    existing = set(
        conn.execute(
            sqlalchemy.text("SELECT indexname FROM pg_indexes WHERE tablename = 'chunks' AND indexname LIKE :p"),
            {"p": "chunks_vector_%"},
        ).scalars()
    )
    if spec.name not in existing:
        # Building on a large table blocks writes to it meanwhile: say so in the log.
        logger.info("building the pgvector index %s", spec.name)
        conn.execute(sqlalchemy.text(spec.create_sql()))
    others = sorted(existing - {spec.name})
    if others:
        logger.warning(
            "pgvector indexes %s of another store.vector_precision are kept up to date too; drop them if unused",
            ", ".join(others),
        )


def _configure(conn: Connection) -> None:
    register_vector(conn)
    conn.execute("SET TIME ZONE 'UTC'")


def _pool(url: str, min_size: int, max_size: int, name: str) -> psycopg_pool.ConnectionPool[Connection]:
    pool: psycopg_pool.ConnectionPool[Connection] = psycopg_pool.ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True},
        configure=_configure,
        check=psycopg_pool.ConnectionPool.check_connection,
        timeout=_CONNECT_TIMEOUT_SECONDS,
        name=name,
        open=False,
    )
    with translated_errors(f"connecting to PostgreSQL ({name})"):
        pool.open(wait=min_size > 0, timeout=_CONNECT_TIMEOUT_SECONDS)
    return pool


class PostgresDatabase:
    """Pools to the primary and the read replicas. ``write()`` is a transaction on the primary; ``primary()``
    a connection for reads that must see every committed write; ``replica()`` one for reads that tolerate lag
    (the primary when there are no replicas)."""

    def __init__(self, url: str, read_urls: Sequence[str] = (), min_size: int = 1, max_size: int = 10) -> None:
        self._primary = _pool(url, min_size, max_size, "ragserve-primary")
        self._replicas: list[psycopg_pool.ConnectionPool[Connection]] = []
        try:
            for i, read_url in enumerate(read_urls):
                self._replicas.append(_pool(read_url, min_size, max_size, f"ragserve-replica-{i}"))
        except BaseException:
            self.close()
            raise
        self._turns = itertools.count()

    @property
    def primary_pool(self) -> psycopg_pool.ConnectionPool[Connection]:
        return self._primary

    @property
    def replica_pools(self) -> list[psycopg_pool.ConnectionPool[Connection]]:
        return list(self._replicas)

    @contextmanager
    def primary(self) -> Iterator[Connection]:
        with translated_errors("reading from PostgreSQL"), self._primary.connection() as conn:
            yield conn

    @contextmanager
    def replica(self) -> Iterator[Connection]:
        if not self._replicas:
            with self.primary() as conn:
                yield conn
            return
        pool = self._replicas[next(self._turns) % len(self._replicas)]
        with translated_errors("reading from a PostgreSQL replica"), pool.connection() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction on the primary: committed when the block ends, rolled back if it raises."""
        with translated_errors("writing to PostgreSQL"), self._primary.connection() as conn, conn.transaction():
            yield conn

    def ping(self) -> None:
        """Raises ``StoreError`` when the primary cannot answer."""
        with self.primary() as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        for pool in [self._primary, *self._replicas]:
            pool.close()
