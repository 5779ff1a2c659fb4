"""Audit events of API requests: ``RequestAudit`` (``deps.AuditDep``), which routes record an action with once
it succeeded, and the record of refused credentials and scopes (``auth.denied``) that ``deps.py`` makes."""

from __future__ import annotations

import anyio.to_thread
from fastapi import Request

from ragserve.domain import Principal
from ragserve.errors import AuthenticationError, RagserveError
from ragserve.security.audit import AuditEvent, Auditor, DetailValue
from ragserve.security.keys import key_id_of

UNAUTHENTICATED = "unauthenticated"
_MAX_TARGET_CHARS = 256


def client_ip(request: Request) -> str | None:
    # The peer address (uvicorn puts a trusted proxy's X-Forwarded-For here, per --forwarded-allow-ips).
    return request.client.host if request.client is not None else None


def _request_id(request: Request) -> str | None:
    value = getattr(request.state, "request_id", None)
    return str(value) if value else None


class RequestAudit:
    """Records actions of one request: who (its principal), its request id and client address."""

    def __init__(self, auditor: Auditor, principal: Principal, request: Request) -> None:
        self._auditor = auditor
        self._principal = principal
        self._request_id = _request_id(request)
        self._client_ip = client_ip(request)

    async def record(self, action: str, target: str | None = None, **details: DetailValue) -> None:
        """Record ``action`` as done (call it after the action succeeded); never raises."""
        event = AuditEvent(
            action=action,
            tenant=self._principal.tenant,
            subject=self._principal.subject,
            key_id=self._principal.key_id,
            target=target,
            request_id=self._request_id,
            client_ip=self._client_ip,
            details=details,
        )
        await anyio.to_thread.run_sync(self._auditor.record, event)


def record_denied(request: Request, code: str, principal: Principal | None, **details: DetailValue) -> None:
    """Record a refused request (``code``: ``unauthorized`` or ``forbidden``). Blocking: FastAPI runs the
    synchronous dependencies that call this in a worker thread. Without a principal, the key id of a
    credential shaped like an API key (its public part) says which key was tried, and so whose tenant."""
    auditor: Auditor | None = getattr(request.app.state, "auditor", None)
    if auditor is None:
        return
    if principal is None:
        key_id, subject = _tried_key_id(request), UNAUTHENTICATED
        tenant = _tenant_of(request, key_id)
    else:
        key_id, tenant, subject = principal.key_id, principal.tenant, principal.subject
    auditor.record(
        AuditEvent(
            action="auth.denied",
            outcome="denied",
            tenant=tenant,
            subject=subject,
            key_id=key_id,
            target=f"{request.method} {request.url.path}"[:_MAX_TARGET_CHARS],
            request_id=_request_id(request),
            client_ip=client_ip(request),
            details={"code": code, **details},
        )
    )


def _tried_key_id(request: Request) -> str | None:
    credential = request.headers.get("authorization", "").partition(" ")[2].strip()
    try:
        return key_id_of(credential)
    except AuthenticationError:
        return None


def _tenant_of(request: Request, key_id: str | None) -> str:
    service = getattr(request.app.state, "service", None)
    if key_id is None or service is None:
        return ""
    try:
        found = service.stores.keys.get_key(key_id)
    except RagserveError:  # the refusal stands (401) whether or not its tenant can be named
        return ""
    return "" if found is None else str(found[0].tenant)
