"""API keys in the embedded database."""

from __future__ import annotations

import json

from ragserve.domain import ApiKey
from ragserve.errors import NotFoundError
from ragserve.stores.sqlite_db import SqliteDatabase, parse_time, utc_now

_COLUMNS = "id, name, tenant, scopes, created_at, expires_at, revoked_at, user, groups"


def _key(row: tuple[object, ...]) -> ApiKey:
    return ApiKey(
        id=str(row[0]),
        name=str(row[1]),
        tenant=str(row[2]),
        scopes=tuple(json.loads(str(row[3]))),
        created_at=parse_time(str(row[4])),
        expires_at=None if row[5] is None else parse_time(str(row[5])),
        revoked_at=None if row[6] is None else parse_time(str(row[6])),
        user=None if row[7] is None else str(row[7]),
        groups=tuple(json.loads(str(row[8]))),
    )


class SqliteApiKeys:
    """Implements ``ApiKeyStore``."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    def create_key(self, key: ApiKey, key_hash: str) -> None:
        with self._db.write() as conn:
            conn.execute(
                f"INSERT INTO api_keys({_COLUMNS}, key_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.id,
                    key.name,
                    key.tenant,
                    json.dumps(list(key.scopes)),
                    key.created_at.isoformat(),
                    None if key.expires_at is None else key.expires_at.isoformat(),
                    None,
                    key.user,
                    json.dumps(list(key.groups)),
                    key_hash,
                ),
            )

    def get_key(self, key_id: str) -> tuple[ApiKey, str] | None:
        row = self._db.fetchone(f"SELECT {_COLUMNS}, key_hash FROM api_keys WHERE id = ?", (key_id,))
        return None if row is None else (_key(tuple(row[:9])), str(row[9]))

    def list_keys(self, tenant: str | None) -> list[ApiKey]:
        where, params = ("WHERE tenant = ?", [tenant]) if tenant is not None else ("", [])
        rows = self._db.fetchall(f"SELECT {_COLUMNS} FROM api_keys {where} ORDER BY created_at DESC, id", params)
        return [_key(tuple(r)) for r in rows]

    def revoke_key(self, key_id: str, tenant: str | None) -> ApiKey:
        with self._db.write() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            if row is None or (tenant is not None and row[2] != tenant):
                raise NotFoundError(f"API key {key_id!r} not found")
            conn.execute("UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?", (utc_now(), key_id))
            row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return _key(tuple(row))
