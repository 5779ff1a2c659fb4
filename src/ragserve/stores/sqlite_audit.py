"""The audit log in the embedded database: the ``audit_events`` table, created here when the log opens
(``CREATE TABLE IF NOT EXISTS``; an older database simply gains it)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from ragserve.security.audit import AuditEvent, AuditFilters, encode_details
from ragserve.stores.sqlite_db import SqliteDatabase, parse_time

_DDL = """
CREATE TABLE IF NOT EXISTS audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    occurred_at TEXT NOT NULL,
    tenant TEXT NOT NULL,
    subject TEXT NOT NULL,
    key_id TEXT,
    action TEXT NOT NULL,
    target TEXT,
    outcome TEXT NOT NULL,
    request_id TEXT,
    client_ip TEXT,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_events_tenant ON audit_events(tenant, occurred_at);
"""
_COLUMNS = "id, occurred_at, tenant, subject, key_id, action, target, outcome, request_id, client_ip, details"


def _time(value: datetime) -> str:
    # One fixed width (UTC, microseconds) so that text order is time order; a naive time is taken as UTC.
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="microseconds")


def _event(row: tuple[Any, ...]) -> AuditEvent:
    return AuditEvent(
        id=int(row[0]),
        occurred_at=parse_time(str(row[1])),
        tenant=str(row[2]),
        subject=str(row[3]),
        key_id=row[4],
        action=str(row[5]),
        target=row[6],
        outcome="denied" if row[7] == "denied" else "success",
        request_id=row[8],
        client_ip=row[9],
        details=json.loads(str(row[10])),
    )


class SqliteAuditLog:
    """Implements ``AuditLog``."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        with db.write() as conn:
            for statement in _DDL.split(";"):
                if statement.strip():
                    conn.execute(statement)

    def record(self, event: AuditEvent) -> AuditEvent:
        with self._db.write() as conn:
            cursor = conn.execute(
                f"INSERT INTO audit_events({_COLUMNS.removeprefix('id, ')}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _time(event.occurred_at),
                    event.tenant,
                    event.subject,
                    event.key_id,
                    event.action,
                    event.target,
                    event.outcome,
                    event.request_id,
                    event.client_ip,
                    encode_details(event.details),
                ),
            )
            event_id = cursor.lastrowid
        return replace(event, id=event_id)

    def list_events(self, tenant: str | None, filters: AuditFilters, limit: int) -> list[AuditEvent]:
        where: list[str] = []
        params: list[object] = []
        if tenant is not None:
            where.append("tenant = ?")
            params.append(tenant)
        if filters.action_prefix is not None:
            where.append("substr(action, 1, ?) = ?")
            params += [len(filters.action_prefix), filters.action_prefix]
        elif filters.action is not None:
            where.append("action = ?")
            params.append(filters.action)
        if filters.since is not None:
            where.append("occurred_at >= ?")
            params.append(_time(filters.since))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.fetchall(
            f"SELECT {_COLUMNS} FROM audit_events {clause} ORDER BY occurred_at DESC, id DESC LIMIT ?",
            [*params, limit],
        )
        return [_event(tuple(r)) for r in rows]
