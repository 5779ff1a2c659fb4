"""The audit log in PostgreSQL: the ``audit_events`` table of migration 0003."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC
from typing import Any

from psycopg.types.json import Jsonb

from ragserve.security.audit import AuditEvent, AuditFilters
from ragserve.stores.postgres_db import PostgresDatabase

_COLUMNS = "id, occurred_at, tenant, subject, key_id, action, target, outcome, request_id, client_ip, details"


def _event(row: tuple[Any, ...]) -> AuditEvent:
    return AuditEvent(
        id=int(row[0]),
        occurred_at=row[1],
        tenant=str(row[2]),
        subject=str(row[3]),
        key_id=row[4],
        action=str(row[5]),
        target=row[6],
        outcome="denied" if row[7] == "denied" else "success",
        request_id=row[8],
        client_ip=row[9],
        details=dict(row[10]),
    )


class PostgresAuditLog:
    """Implements ``AuditLog``. Reads go to the primary: an admin reading the log expects the latest events."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def record(self, event: AuditEvent) -> AuditEvent:
        with self._db.write() as conn:
            row = conn.execute(
                f"INSERT INTO audit_events({_COLUMNS.removeprefix('id, ')}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    event.occurred_at,
                    event.tenant,
                    event.subject,
                    event.key_id,
                    event.action,
                    event.target,
                    event.outcome,
                    event.request_id,
                    event.client_ip,
                    Jsonb(dict(event.details)),
                ),
            ).fetchone()
        assert row is not None  # INSERT ... RETURNING returns the row
        return replace(event, id=int(row[0]))

    def list_events(self, tenant: str | None, filters: AuditFilters, limit: int) -> list[AuditEvent]:
        where: list[str] = []
        params: list[object] = []
        if tenant is not None:
            where.append("tenant = %s")
            params.append(tenant)
        if filters.action_prefix is not None:
            where.append("starts_with(action, %s)")
            params.append(filters.action_prefix)
        elif filters.action is not None:
            where.append("action = %s")
            params.append(filters.action)
        if filters.since is not None:
            since = filters.since if filters.since.tzinfo is not None else filters.since.replace(tzinfo=UTC)
            where.append("occurred_at >= %s")
            params.append(since)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._db.primary() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM audit_events {clause} ORDER BY occurred_at DESC, id DESC LIMIT %s",
                [*params, limit],
            )
            return [_event(tuple(r)) for r in rows.fetchall()]
