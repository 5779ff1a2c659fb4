"""Index versions in PostgreSQL: their rows, the route that sends queries to them, golden sets.

As in SQLite, chunks, postings and BM25 totals are keyed by index id, and version 1's index id is its
collection's id. Creating and deleting a version take the collection row's exclusive lock, which every document
write shares: a write either sees the new version (and is refused, to be chunked again) or is in it.
"""

from __future__ import annotations

import uuid
from typing import Any

from psycopg.types.json import Jsonb

from ragserve.domain import IndexConfig, IndexRoute, IndexState, IndexVersion
from ragserve.errors import ConflictError, NotFoundError
from ragserve.stores.codec import config_from_json, config_to_json
from ragserve.stores.postgres_chunks import StatsDelta, delete_chunks
from ragserve.stores.postgres_db import PostgresDatabase, utc_now

_COLUMNS = "index_id, collection_id, version, config, state, built, total, error, created_at"


def _version(row: tuple[Any, ...]) -> IndexVersion:
    return IndexVersion(
        index_id=str(row[0]),
        collection_id=str(row[1]),
        version=int(row[2]),
        config=config_from_json(str(row[3])),
        state=IndexState(str(row[4])),
        built=int(row[5]),
        total=int(row[6]),
        error=None if row[7] is None else str(row[7]),
        created_at=row[8],
    )


class PostgresIndexVersions:
    """Implements ``IndexVersionStore``; every read is from the primary (a route must never go back in time)."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def list_versions(self, collection_id: str) -> list[IndexVersion]:
        with self._db.primary() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM index_versions WHERE collection_id = %s ORDER BY version", (collection_id,)
            ).fetchall()
        return [_version(r) for r in rows]

    def live_versions(self, collection_id: str) -> list[IndexVersion]:
        return [v for v in self.list_versions(collection_id) if v.state is not IndexState.FAILED]

    def create_version(self, collection_id: str, config: IndexConfig, total: int) -> IndexVersion:
        index_id = uuid.uuid4().hex
        with self._db.write() as conn:
            locked = conn.execute(
                "SELECT 1 FROM collections WHERE id = %s FOR NO KEY UPDATE", (collection_id,)
            ).fetchone()
            if locked is None:
                raise NotFoundError(f"collection {collection_id!r} not found")
            row = conn.execute(
                "INSERT INTO index_versions(index_id, collection_id, version, config, state, total, created_at) "
                "SELECT %s, %s, coalesce(max(version), 0) + 1, %s, 'building', %s, %s FROM index_versions "
                f"WHERE collection_id = %s RETURNING {_COLUMNS}",
                (index_id, collection_id, config_to_json(config), total, utc_now(), collection_id),
            ).fetchone()
        assert row is not None
        return _version(row)

    def update_version(
        self, index_id: str, *, state: IndexState | None = None, built: int | None = None, error: str | None = None
    ) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE index_versions SET state = coalesce(%s, state), built = coalesce(%s, built), "
                "error = coalesce(%s, error) WHERE index_id = %s",
                (None if state is None else state.value, built, error, index_id),
            )

    def index_route(self, collection_id: str) -> IndexRoute:
        with self._db.primary() as conn:
            rows = conn.execute(
                "SELECT c.active_index, c.canary_index, c.canary_share, c.previous_index, "
                + ", ".join(f"v.{column.strip()}" for column in _COLUMNS.split(","))
                + " FROM collections c LEFT JOIN index_versions v ON v.collection_id = c.id WHERE c.id = %s "
                "ORDER BY v.version",
                (collection_id,),
            ).fetchall()
        if not rows:
            raise NotFoundError(f"collection {collection_id!r} not found")
        active_id, canary_id, share, previous_id = rows[0][:4]
        versions = {str(r[4]): _version(r[4:]) for r in rows if r[4] is not None}
        active = versions.get(str(active_id))
        if active is None:
            raise NotFoundError(f"collection {collection_id!r} has no active index version")
        return IndexRoute(
            active=active,
            canary=versions.get(str(canary_id)),
            canary_share=float(share) if canary_id is not None else 0.0,
            previous=versions.get(str(previous_id)),
        )

    def set_route(
        self, collection_id: str, active: str, canary: str | None, canary_share: float, previous: str | None
    ) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE collections SET active_index = %s, canary_index = %s, canary_share = %s, "
                "previous_index = %s WHERE id = %s",
                (active, canary, canary_share if canary is not None else 0.0, previous, collection_id),
            )

    def delete_version(self, index_id: str) -> list[int]:
        with self._db.write() as conn:
            route = conn.execute(
                "SELECT c.active_index, c.canary_index FROM collections c JOIN index_versions v "
                "ON v.collection_id = c.id WHERE v.index_id = %s FOR NO KEY UPDATE OF c",
                (index_id,),
            ).fetchone()
            if route is not None and index_id in route:
                raise ConflictError("an index version that queries are routed to cannot be deleted")
            ids = [
                int(r[0])
                for r in conn.execute("SELECT id FROM chunks WHERE collection_id = %s ORDER BY id", (index_id,))
            ]
            delete_chunks(conn, ids, StatsDelta())  # the version's totals go with it
            conn.execute("DELETE FROM keyword_stats WHERE index_id = %s", (index_id,))
            conn.execute("UPDATE collections SET previous_index = NULL WHERE previous_index = %s", (index_id,))
            conn.execute("DELETE FROM index_versions WHERE index_id = %s", (index_id,))
        return ids

    def get_golden_set(self, collection_id: str) -> dict[str, Any] | None:
        with self._db.primary() as conn:
            row = conn.execute("SELECT body FROM golden_sets WHERE collection_id = %s", (collection_id,)).fetchone()
        return None if row is None else dict(row[0])

    def set_golden_set(self, collection_id: str, golden: dict[str, object]) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO golden_sets(collection_id, body) VALUES (%s, %s) "
                "ON CONFLICT (collection_id) DO UPDATE SET body = excluded.body",
                (collection_id, Jsonb(golden)),
            )
