"""API keys: create (the key is in the response, once), list, revoke. An admin manages its own tenant's keys;
``ragserve keys ...`` on the server's machine manages any tenant's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from ragserve.api.deps import AdminPrincipal, AuditDep, ServiceDep
from ragserve.api.schemas import ErrorResponse
from ragserve.domain import ApiKey
from ragserve.security.auth import Authenticator, create_key

router = APIRouter(prefix="/v1/keys", tags=["keys"])
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 422)}


class KeyPublic(BaseModel):
    id: str
    name: str
    tenant: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    user: str | None = None
    groups: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, key: ApiKey) -> KeyPublic:
        return cls(
            id=key.id,
            name=key.name,
            tenant=key.tenant,
            scopes=list(key.scopes),
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            user=key.user,
            groups=list(key.groups),
        )


class CreateKey(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(min_length=1, max_length=3, description="query, ingest, admin")
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)
    user: str | None = Field(default=None, min_length=1, max_length=256, description="who it reads as in ACLs")
    groups: list[str] = Field(default_factory=list, max_length=100, description="groups it reads as in ACLs")


class CreatedKey(BaseModel):
    key: str = Field(description="shown once; only its hash is stored")
    info: KeyPublic


class KeyList(BaseModel):
    keys: list[KeyPublic]


@router.post("", status_code=201, response_model=CreatedKey, responses=_ERRORS)
async def create(
    body: CreateKey, principal: AdminPrincipal, service: ServiceDep, request: Request, audit: AuditDep
) -> CreatedKey:
    """A new key for the caller's tenant."""
    authenticator: Authenticator = request.app.state.authenticator
    secret, key = await anyio.to_thread.run_sync(
        create_key,
        service.stores.keys,
        authenticator.pepper,
        body.name,
        principal.tenant,
        body.scopes,
        body.expires_in_days,
        body.user,
        body.groups,
    )
    await audit.record("key.create", f"key:{key.id}", name=key.name, scopes=",".join(key.scopes))
    return CreatedKey(key=secret, info=KeyPublic.of(key))


@router.get("", response_model=KeyList, responses=_ERRORS)
async def list_keys(principal: AdminPrincipal, service: ServiceDep) -> KeyList:
    """The caller's tenant's keys (never the keys themselves)."""
    keys = await anyio.to_thread.run_sync(service.stores.keys.list_keys, principal.tenant)
    return KeyList(keys=[KeyPublic.of(k) for k in keys])


@router.delete("/{key_id}", response_model=KeyPublic, responses=_ERRORS)
async def revoke(
    key_id: str, principal: AdminPrincipal, service: ServiceDep, request: Request, audit: AuditDep
) -> KeyPublic:
    """Revoke a key of the caller's tenant: it stops working at once on this server, within
    ``auth.key_cache_seconds`` on the others."""
    key = await anyio.to_thread.run_sync(service.stores.keys.revoke_key, key_id, principal.tenant)
    authenticator: Authenticator = request.app.state.authenticator
    authenticator.forget(key_id)
    await audit.record("key.revoke", f"key:{key.id}", name=key.name)
    return KeyPublic.of(key)
