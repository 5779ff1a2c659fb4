"""API keys in PostgreSQL."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from ragserve.domain import ApiKey
from ragserve.errors import NotFoundError
from ragserve.stores.postgres_db import PostgresDatabase

_COLUMNS = "id, name, tenant, scopes, created_at, expires_at, revoked_at, user_name, groups"


def _key(row: tuple[Any, ...]) -> ApiKey:
    return ApiKey(
        id=str(row[0]),
        name=str(row[1]),
        tenant=str(row[2]),
        scopes=tuple(row[3]),
        created_at=row[4],
        expires_at=row[5],
        revoked_at=row[6],
        user=row[7],
        groups=tuple(row[8]),
    )


class PostgresApiKeys:
    """Implements ``ApiKeyStore``. Reads go to the primary: a revocation must count at once."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def create_key(self, key: ApiKey, key_hash: str) -> None:
        with self._db.write() as conn:
            conn.execute(
                f"INSERT INTO api_keys({_COLUMNS}, key_hash) VALUES (%s, %s, %s, %s, %s, %s, NULL, %s, %s, %s)",
                (
                    key.id,
                    key.name,
                    key.tenant,
                    Jsonb(list(key.scopes)),
                    key.created_at,
                    key.expires_at,
                    key.user,
                    Jsonb(list(key.groups)),
                    key_hash,
                ),
            )

    def get_key(self, key_id: str) -> tuple[ApiKey, str] | None:
        with self._db.primary() as conn:
            row = conn.execute(f"SELECT {_COLUMNS}, key_hash FROM api_keys WHERE id = %s", (key_id,)).fetchone()
        return None if row is None else (_key(tuple(row[:9])), str(row[9]))

    def list_keys(self, tenant: str | None) -> list[ApiKey]:
        where, params = ("WHERE tenant = %s", [tenant]) if tenant is not None else ("", [])
        with self._db.primary() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM api_keys {where} ORDER BY created_at DESC, id", params)
            return [_key(tuple(r)) for r in rows.fetchall()]

    def revoke_key(self, key_id: str, tenant: str | None) -> ApiKey:
        with self._db.write() as conn:
            row = conn.execute(
                f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s "
                f"AND (%s::text IS NULL OR tenant = %s) RETURNING {_COLUMNS}",
                (key_id, tenant, tenant),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"API key {key_id!r} not found")
        return _key(tuple(row))
