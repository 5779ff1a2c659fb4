"""The audit log, read by an admin: the events of the caller's tenant, newest first. ``ragserve audit list`` on
the server's machine reads every tenant's."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ragserve.api.deps import AdminPrincipal, ServiceDep
from ragserve.api.schemas import ErrorResponse
from ragserve.security.audit import AuditEvent, AuditFilters, DetailValue

router = APIRouter(prefix="/v1/audit", tags=["audit"])
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 403, 422)}


class AuditEventPublic(BaseModel):
    id: int
    occurred_at: datetime
    action: str
    outcome: Literal["success", "denied"]
    tenant: str
    subject: str = Field(description="key:<id>, jwt:<subject>, anonymous, cli:<user> or unauthenticated")
    key_id: str | None
    target: str | None
    request_id: str | None
    client_ip: str | None
    details: dict[str, DetailValue]

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventPublic:
        return cls(
            id=event.id or 0,
            occurred_at=event.occurred_at,
            action=event.action,
            outcome=event.outcome,
            tenant=event.tenant,
            subject=event.subject,
            key_id=event.key_id,
            target=event.target,
            request_id=event.request_id,
            client_ip=event.client_ip,
            details=dict(event.details),
        )


class AuditEventList(BaseModel):
    events: list[AuditEventPublic]


@router.get("", response_model=AuditEventList, responses=_ERRORS)
async def list_events(
    principal: AdminPrincipal,
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    action: Annotated[str | None, Query(max_length=100, description="an action, or a prefix: index.*")] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601; without a zone, UTC")] = None,
) -> AuditEventList:
    """Audit events of the caller's tenant, newest first: who did what, to what, when, with what outcome."""
    events = await anyio.to_thread.run_sync(
        service.stores.audit.list_events, principal.tenant, AuditFilters(action, since), limit
    )
    return AuditEventList(events=[AuditEventPublic.of(e) for e in events])
