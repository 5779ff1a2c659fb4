"""Contract tests of ``AuditLog`` on SQLite and PostgreSQL: events are stored with every field, listed newest
first per tenant, filtered by action (exact or ``prefix.*``) and time, and limited."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from ragserve.security.audit import AuditEvent, AuditFilters, AuditLog
from ragserve.stores.sqlite_audit import SqliteAuditLog
from ragserve.stores.sqlite_db import SCHEMA_VERSION, SqliteDatabase

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[AuditLog, Callable[[], None]]:
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    return SqliteAuditLog(db), db.close


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[AuditLog, Callable[[], None]]:
    from ragserve.stores.postgres_audit import PostgresAuditLog
    from ragserve.stores.postgres_db import PostgresDatabase, VectorIndexSpec, migrate

    url = request.getfixturevalue("postgres_url")
    migrate(url, VectorIndexSpec(dimension=4))
    db = PostgresDatabase(url)
    return PostgresAuditLog(db), db.close


AUDIT_BACKENDS = {"sqlite": _sqlite, "postgres": _postgres}


@pytest.fixture(params=sorted(AUDIT_BACKENDS))
def audit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditLog]:
    log, close = AUDIT_BACKENDS[request.param](request, tmp_path)
    yield log
    close()


def _event(
    action: str, tenant: str = "acme", minutes: float = 0, **details: str | int | float | bool | None
) -> AuditEvent:
    return AuditEvent(
        action=action,
        tenant=tenant,
        subject="key:0123456789ab",
        key_id="0123456789ab",
        target="collection:handbook",
        request_id="req-1",
        client_ip="10.0.0.7",
        details=details,
        occurred_at=T0 + timedelta(minutes=minutes),
    )


def test_an_event_comes_back_with_every_field(audit: AuditLog) -> None:
    stored = audit.record(_event("documents.ingest", job_id="j1", document_count=3, dry=False, share=0.25, x=None))
    assert stored.id is not None
    denied = audit.record(
        AuditEvent(action="auth.denied", tenant="", subject="unauthenticated", outcome="denied", occurred_at=T0)
    )
    assert denied.id is not None
    assert denied.id != stored.id
    [listed] = audit.list_events("acme", AuditFilters(), 10)
    assert listed == stored
    assert listed.occurred_at == T0
    assert listed.occurred_at.utcoffset() == timedelta(0)
    assert dict(listed.details) == {"job_id": "j1", "document_count": 3, "dry": False, "share": 0.25, "x": None}
    [back] = audit.list_events("", AuditFilters(), 10)
    assert (back.outcome, back.key_id, back.target, back.request_id, back.client_ip) == (
        "denied",
        None,
        None,
        None,
        None,
    )


def test_events_are_listed_newest_first_per_tenant_filtered_and_limited(audit: AuditLog) -> None:
    for minutes, action, tenant in [
        (0, "key.create", "acme"),
        (1, "index.create", "acme"),
        (2, "index.promote", "acme"),
        (3, "key.create", "globex"),
        (4, "document.delete", "acme"),
        (5, "indexer.custom", "acme"),
    ]:
        audit.record(_event(action, tenant, minutes))

    def actions(tenant: str | None, filters: AuditFilters | None = None, limit: int = 100) -> list[str]:
        return [e.action for e in audit.list_events(tenant, filters or AuditFilters(), limit)]

    assert actions("acme") == ["indexer.custom", "document.delete", "index.promote", "index.create", "key.create"]
    assert actions("globex") == ["key.create"]
    assert actions("initech") == []
    assert len(actions(None)) == 6
    assert [e.tenant for e in audit.list_events(None, AuditFilters("key.create"), 10)] == ["globex", "acme"]
    assert actions("acme", AuditFilters("index.*")) == ["index.promote", "index.create"]  # not indexer.custom
    assert actions("acme", AuditFilters("index")) == []
    assert actions("acme", AuditFilters(since=T0 + timedelta(minutes=2))) == [
        "indexer.custom",
        "document.delete",
        "index.promote",
    ]
    # The same instant in another zone, and a naive time taken as UTC.
    east = (T0 + timedelta(minutes=4)).astimezone(timezone(timedelta(hours=2)))
    assert actions("acme", AuditFilters(since=east)) == ["indexer.custom", "document.delete"]
    naive = (T0 + timedelta(minutes=5)).replace(tzinfo=None)
    assert actions("acme", AuditFilters(since=naive)) == ["indexer.custom"]
    assert actions("acme", AuditFilters("index.*", T0 + timedelta(minutes=2))) == ["index.promote"]
    assert actions("acme", limit=2) == ["indexer.custom", "document.delete"]


def test_events_in_the_same_instant_keep_their_order(audit: AuditLog) -> None:
    for n in range(5):
        audit.record(_event("document.delete", n=n))
    assert [e.details["n"] for e in audit.list_events("acme", AuditFilters(), 10)] == [4, 3, 2, 1, 0]


def test_the_sqlite_table_is_added_to_an_existing_database_without_a_schema_bump(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    SqliteDatabase(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit_events'").fetchone() is None
    db = SqliteDatabase(path)
    SqliteAuditLog(db).record(_event("key.create"))
    db.close()
    db = SqliteDatabase(path)
    log = SqliteAuditLog(db)  # opening again keeps the rows
    assert [e.action for e in log.list_events(None, AuditFilters(), 10)] == ["key.create"]
    version = db.fetchone("SELECT value FROM meta WHERE key = 'schema_version'")
    assert version == (str(SCHEMA_VERSION),)
    db.close()
