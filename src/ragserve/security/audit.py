"""The audit log: who (principal, key id, tenant) did what (an action such as ``key.create``), to what
(``target``), with what outcome, from where (request id, client address), and when.

The API records an event after an admin or ingestion action succeeds, and when it refuses credentials or a
scope (``auth.denied``); ``ragserve keys`` records the keys it creates and revokes. Each event is also logged to
the ``ragserve.audit`` logger with its fields as a structured ``audit`` object (one JSON line with
``observability.json_logs``). An event holds ids, names and counts: never a credential or a request body.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol, TypeAlias

from ragserve.observability.metrics import AUDIT_EVENTS, AUDIT_FAILURES

logger = logging.getLogger("ragserve.audit")

AuditOutcome: TypeAlias = Literal["success", "denied"]
DetailValue: TypeAlias = str | int | float | bool | None

# The actions ragserve records (a filter may name any string; these are what it will find).
ACTIONS = (
    "auth.denied",
    "key.create",
    "key.revoke",
    "documents.ingest",
    "document.upsert",
    "document.delete",
    "sync",
    "collection.settings.update",
    "index.create",
    "index.canary",
    "index.promote",
    "index.rollback",
    "index.delete",
    "index.golden.update",
    "dlq.requeue",
)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One recorded action. ``subject`` is the principal (``key:<id>``, ``jwt:<sub>``, ``anonymous``,
    ``cli:<user>``, or ``unauthenticated``); ``details`` are a few scalars (job id, counts, a version).
    ``id`` is assigned by the log that stores it."""

    action: str
    tenant: str
    subject: str
    outcome: AuditOutcome = "success"
    key_id: str | None = None
    target: str | None = None
    request_id: str | None = None
    client_ip: str | None = None
    details: Mapping[str, DetailValue] = field(default_factory=dict)
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: int | None = None

    def to_log(self) -> dict[str, object]:
        """The event as plain JSON-able fields (times in ISO 8601, UTC)."""
        fields = asdict(self)
        fields["occurred_at"] = self.occurred_at.astimezone(UTC).isoformat()
        fields["details"] = dict(self.details)
        return fields


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """Which events to list: ``action`` exactly, or every action under a prefix when it ends in ``.*``
    (``index.*``); events at or after ``since``."""

    action: str | None = None
    since: datetime | None = None

    @property
    def action_prefix(self) -> str | None:
        return self.action[:-1] if self.action is not None and self.action.endswith(".*") else None


class AuditLog(Protocol):
    """Stored audit events, append-only."""

    def record(self, event: AuditEvent) -> AuditEvent:
        """Store ``event``; returns it with its ``id``. Raises ``StoreError``."""
        ...

    def list_events(self, tenant: str | None, filters: AuditFilters, limit: int) -> list[AuditEvent]:
        """Up to ``limit`` events of ``tenant`` (every tenant's when None) that pass ``filters``, newest first."""
        ...


def encode_details(details: Mapping[str, DetailValue]) -> str:
    return json.dumps(dict(details), sort_keys=True, separators=(",", ":"))


class DeniedThrottle:
    """At most ``per_minute`` refusals recorded per client address in each minute: a flood of bad requests
    must not turn into a flood of database writes. Bounded memory: past ``max_clients`` addresses in one
    minute, further new ones are not recorded either."""

    def __init__(self, per_minute: int, max_clients: int = 10_000) -> None:
        self._per_minute = per_minute
        self._max_clients = max_clients
        self._window = 0
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, client: str | None, now: float | None = None) -> bool:
        window = int((time.monotonic() if now is None else now) // 60)
        key = client or "-"
        with self._lock:
            if window != self._window:
                self._window, self._counts = window, {}
            count = self._counts.get(key)
            if count is None and len(self._counts) >= self._max_clients:
                return False
            if (count or 0) >= self._per_minute:
                return False
            self._counts[key] = (count or 0) + 1
            return True


class Auditor:
    """Records events in an ``AuditLog`` and logs each to ``ragserve.audit``. A failure to store an event is
    logged and counted (``ragserve_audit_write_failures_total``), never raised: the action it describes has
    already happened, and the log line still carries it."""

    def __init__(self, log: AuditLog, *, record_denied: bool = True, denied_per_minute: int = 60) -> None:
        self._log = log
        self._record_denied = record_denied
        self._throttle = DeniedThrottle(denied_per_minute)

    def record(self, event: AuditEvent) -> None:
        """Store and log ``event`` (blocking: call it from a worker thread in async code)."""
        if event.outcome == "denied" and not (self._record_denied and self._throttle.allow(event.client_ip)):
            return
        AUDIT_EVENTS.labels(action=event.action, outcome=event.outcome).inc()
        logger.info(
            "%s %s by %s (tenant %s)%s",
            event.action,
            event.outcome,
            event.subject,
            event.tenant,
            f" on {event.target}" if event.target else "",
            extra={"audit": event.to_log()},
        )
        try:
            self._log.record(event)
        except Exception:  # the log line above keeps the event; a dropped row must not fail the request
            AUDIT_FAILURES.inc()
            logger.exception("could not store the audit event %s", event.action)
