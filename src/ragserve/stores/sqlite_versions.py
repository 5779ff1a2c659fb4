"""Index versions of the embedded store: their rows, the route that sends queries to them, golden sets.

Chunks, keyword tables and vector graphs are keyed by index id; version 1's index id is its collection's id,
so a collection made before versions existed is its own version 1.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from ragserve.domain import IndexConfig, IndexRoute, IndexState, IndexVersion, VectorPrecision
from ragserve.errors import ConflictError, NotFoundError
from ragserve.stores.codec import config_from_json, config_to_json
from ragserve.stores.sqlite_chunks import delete_index_chunks
from ragserve.stores.sqlite_db import SqliteDatabase, create_fts_table, fts_table, parse_time, utc_now

_COLUMNS = "index_id, collection_id, version, config, state, built, total, error, created_at"


def _version(row: tuple[object, ...]) -> IndexVersion:
    return IndexVersion(
        index_id=str(row[0]),
        collection_id=str(row[1]),
        version=int(str(row[2])),
        config=config_from_json(str(row[3])),
        state=IndexState(str(row[4])),
        built=int(str(row[5])),
        total=int(str(row[6])),
        error=None if row[7] is None else str(row[7]),
        created_at=parse_time(str(row[8])),
    )


class SqliteIndexVersions:
    """Implements ``IndexVersionStore``."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    def list_versions(self, collection_id: str) -> list[IndexVersion]:
        rows = self._db.fetchall(
            f"SELECT {_COLUMNS} FROM index_versions WHERE collection_id = ? ORDER BY version", (collection_id,)
        )
        return [_version(tuple(r)) for r in rows]

    def precision_of(self, index_id: str) -> VectorPrecision | None:
        """The precision an index version's vectors are searched at (None: no such version)."""
        found = self._db.fetchone("SELECT config FROM index_versions WHERE index_id = ?", (index_id,))
        return None if found is None else config_from_json(str(found[0])).precision

    def live_versions(self, collection_id: str) -> list[IndexVersion]:
        return [v for v in self.list_versions(collection_id) if v.state is not IndexState.FAILED]

    def create_version(self, collection_id: str, config: IndexConfig, total: int) -> IndexVersion:
        index_id = uuid.uuid4().hex
        with self._db.write() as conn:
            (latest,) = conn.execute(
                "SELECT coalesce(max(version), 0) FROM index_versions WHERE collection_id = ?", (collection_id,)
            ).fetchone()
            conn.execute(
                "INSERT INTO index_versions(index_id, collection_id, version, config, state, total, created_at) "
                "VALUES (?, ?, ?, ?, 'building', ?, ?)",
                (index_id, collection_id, int(latest) + 1, config_to_json(config), total, utc_now()),
            )
            self._db.note_fts_write(index_id)
            create_fts_table(conn, index_id)
            row = conn.execute(f"SELECT {_COLUMNS} FROM index_versions WHERE index_id = ?", (index_id,)).fetchone()
        return _version(tuple(row))

    def update_version(
        self, index_id: str, *, state: IndexState | None = None, built: int | None = None, error: str | None = None
    ) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE index_versions SET state = coalesce(?, state), built = coalesce(?, built), "
                "error = coalesce(?, error) WHERE index_id = ?",
                (None if state is None else state.value, built, error, index_id),
            )

    def index_route(self, collection_id: str) -> IndexRoute:
        with self._db.reading() as conn:
            row = conn.execute(
                "SELECT active_index, canary_index, canary_share, previous_index FROM collections WHERE id = ?",
                (collection_id,),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"collection {collection_id!r} not found")
            versions = {v.index_id: v for v in self.list_versions(collection_id)}
        active = versions.get(str(row[0]))
        if active is None:
            raise NotFoundError(f"collection {collection_id!r} has no active index version")
        return IndexRoute(
            active=active,
            canary=versions.get(str(row[1])),
            canary_share=float(row[2]) if row[1] is not None else 0.0,
            previous=versions.get(str(row[3])),
        )

    def set_route(
        self, collection_id: str, active: str, canary: str | None, canary_share: float, previous: str | None
    ) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE collections SET active_index = ?, canary_index = ?, canary_share = ?, previous_index = ? "
                "WHERE id = ?",
                (active, canary, canary_share if canary is not None else 0.0, previous, collection_id),
            )

    def delete_version(self, index_id: str) -> list[int]:
        with self._db.write() as conn:
            routed = conn.execute(
                "SELECT 1 FROM collections WHERE ? IN (active_index, canary_index)", (index_id,)
            ).fetchone()
            if routed is not None:
                raise ConflictError("an index version that queries are routed to cannot be deleted")
            ids = [int(r[0]) for r in conn.execute("SELECT id FROM chunks WHERE collection_id = ?", (index_id,))]
            self._db.note_fts_write(index_id)
            delete_index_chunks(conn, index_id, ids)
            conn.execute("UPDATE collections SET previous_index = NULL WHERE previous_index = ?", (index_id,))
            conn.execute("DELETE FROM index_versions WHERE index_id = ?", (index_id,))
            conn.execute(f"DROP TABLE IF EXISTS {fts_table(index_id)}")
        return ids

    def get_golden_set(self, collection_id: str) -> dict[str, Any] | None:
        row = self._db.fetchone("SELECT body FROM golden_sets WHERE collection_id = ?", (collection_id,))
        return None if row is None else dict(json.loads(row[0]))

    def set_golden_set(self, collection_id: str, golden: dict[str, object]) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO golden_sets(collection_id, body) VALUES (?, ?) "
                "ON CONFLICT(collection_id) DO UPDATE SET body = excluded.body",
                (collection_id, json.dumps(golden)),
            )
