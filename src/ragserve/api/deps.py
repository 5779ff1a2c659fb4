"""Dependencies routes receive through ``Annotated``: the service built in the app's lifespan, the app's
count of requests in flight, and the caller (authenticated, then rate-limited)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ragserve.api.audit import RequestAudit, record_denied
from ragserve.api.middleware import InFlightRequests
from ragserve.api.ratelimit import limit_caller, limit_client
from ragserve.api.schemas import ErrorResponse
from ragserve.domain import Principal, Scope
from ragserve.errors import AuthenticationError, PermissionDeniedError, ServiceUnavailableError
from ragserve.security.audit import Auditor
from ragserve.security.auth import Authenticator, check_scope
from ragserve.service import RagService


def get_service(request: Request) -> RagService:
    service: RagService | None = getattr(request.app.state, "service", None)
    if service is None:
        raise ServiceUnavailableError("the service is starting")
    return service


ServiceDep = Annotated[RagService, Depends(get_service)]


def get_in_flight(request: Request) -> InFlightRequests:
    in_flight: InFlightRequests = request.app.state.in_flight
    return in_flight


InFlightDep = Annotated[InFlightRequests, Depends(get_in_flight)]


# Declares the bearer scheme in the OpenAPI document; the Authenticator reads and checks the header itself.
_BEARER = HTTPBearer(auto_error=False, description="an API key (rsk_...) or, when configured, a JWT")

# What a route behind ``require`` may answer before it runs: bad or missing credentials, a missing scope, a body
# over the size limit (the middleware), a rate limit or quota. Declared once, for every such route.
GUARD_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 403, 413, 429)}


def get_principal(
    request: Request,
    _client_limit: Annotated[None, Depends(limit_client)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
) -> Principal:
    """The caller, from the ``Authorization`` header (anonymous when authentication is off), once its IP is
    within its rate limit. Raises ``AuthenticationError``, ``RateLimitedError``."""
    authenticator: Authenticator | None = getattr(request.app.state, "authenticator", None)
    if authenticator is None:
        raise ServiceUnavailableError("the service is starting")
    try:
        principal = authenticator.authenticate(request.headers.get("authorization"))
    except AuthenticationError as exc:
        record_denied(request, exc.code, None)
        raise
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_limited_principal(request: Request, principal: PrincipalDep) -> Principal:
    """The caller, once within its rate limit and its tenant's request quota (429 otherwise)."""
    await limit_caller(request, principal)
    return principal


def require(scope: Scope) -> Callable[..., Principal]:
    """A dependency that lets only callers with ``scope`` through (403 otherwise, 401 without credentials)."""

    def check(principal: Annotated[Principal, Depends(get_limited_principal)], request: Request) -> Principal:
        try:
            check_scope(principal, scope)
        except PermissionDeniedError as exc:
            record_denied(request, exc.code, principal, scope=scope)
            raise
        return principal

    return check


QueryPrincipal = Annotated[Principal, Depends(require("query"))]
IngestPrincipal = Annotated[Principal, Depends(require("ingest"))]
AdminPrincipal = Annotated[Principal, Depends(require("admin"))]


def get_audit(request: Request, principal: PrincipalDep) -> RequestAudit:
    """Records the request's actions in the audit log, as done by its principal."""
    auditor: Auditor = request.app.state.auditor
    return RequestAudit(auditor, principal, request)


AuditDep = Annotated[RequestAudit, Depends(get_audit)]
