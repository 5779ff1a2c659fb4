"""The auditor: each event is logged to ``ragserve.audit`` with its fields; a store that fails does not fail
the caller; refusals are recorded at most so often per client address. CORS settings refuse mistakes."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from ragserve.errors import StoreError
from ragserve.observability.metrics import AUDIT_FAILURES
from ragserve.security.audit import AuditEvent, AuditFilters, Auditor, DeniedThrottle
from ragserve.settings_security import CorsSettings


class InMemoryAuditLog:
    def __init__(self, *, is_broken: bool = False) -> None:
        self.events: list[AuditEvent] = []
        self.is_broken = is_broken

    def record(self, event: AuditEvent) -> AuditEvent:
        if self.is_broken:
            raise StoreError("the database is gone")
        self.events.append(event)
        return event

    def list_events(self, tenant: str | None, filters: AuditFilters, limit: int) -> list[AuditEvent]:
        return self.events[::-1][:limit]


def _denied(ip: str) -> AuditEvent:
    return AuditEvent(action="auth.denied", tenant="", subject="unauthenticated", outcome="denied", client_ip=ip)


def test_each_event_is_stored_and_logged_with_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    log = InMemoryAuditLog()
    event = AuditEvent(
        action="key.create", tenant="acme", subject="key:0123456789ab", key_id="0123456789ab", target="key:ffff"
    )
    with caplog.at_level(logging.INFO, logger="ragserve.audit"):
        Auditor(log).record(event)
    assert log.events == [event]
    [record] = [r for r in caplog.records if r.name == "ragserve.audit"]
    assert record.getMessage() == "key.create success by key:0123456789ab (tenant acme) on key:ffff"
    fields = record.__dict__["audit"]
    assert (fields["action"], fields["tenant"], fields["key_id"], fields["target"]) == (
        "key.create",
        "acme",
        "0123456789ab",
        "key:ffff",
    )
    assert fields["occurred_at"] == event.occurred_at.isoformat()


def test_a_failing_store_is_logged_and_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    before = AUDIT_FAILURES._value.get()
    with caplog.at_level(logging.INFO, logger="ragserve.audit"):
        Auditor(InMemoryAuditLog(is_broken=True)).record(AuditEvent(action="sync", tenant="acme", subject="anonymous"))
    assert AUDIT_FAILURES._value.get() == before + 1
    assert any(r.levelno == logging.ERROR and "could not store" in r.getMessage() for r in caplog.records)
    assert any(r.getMessage().startswith("sync success") for r in caplog.records)  # the line still says it


def test_refusals_are_recorded_at_most_so_often_per_client() -> None:
    log = InMemoryAuditLog()
    auditor = Auditor(log, denied_per_minute=3)
    for _ in range(5):
        auditor.record(_denied("10.0.0.1"))
    auditor.record(_denied("10.0.0.2"))
    auditor.record(AuditEvent(action="key.create", tenant="acme", subject="anonymous", client_ip="10.0.0.1"))
    assert [e.client_ip for e in log.events] == ["10.0.0.1"] * 3 + ["10.0.0.2", "10.0.0.1"]
    off = InMemoryAuditLog()
    Auditor(off, record_denied=False).record(_denied("10.0.0.1"))
    assert off.events == []


def test_the_throttle_starts_over_each_minute_and_bounds_its_memory() -> None:
    throttle = DeniedThrottle(per_minute=1, max_clients=2)
    assert throttle.allow("a", now=0)
    assert not throttle.allow("a", now=59)
    assert throttle.allow("a", now=60)
    assert throttle.allow("b", now=61)
    assert not throttle.allow("c", now=62)
    assert throttle.allow("c", now=120)


def test_cors_settings_refuse_what_browsers_would_not_match() -> None:
    assert CorsSettings(allow_origins=["https://app.example.com", "http://localhost:5173", "*"]).allow_origins
    for bad in (["https://app.example.com/"], ["app.example.com"], ["https://app.example.com/path"]):
        with pytest.raises(ValidationError, match="is not an origin"):
            CorsSettings(allow_origins=bad)
    with pytest.raises(ValidationError, match="allow_credentials"):
        CorsSettings(allow_origins=["*"], allow_credentials=True)
