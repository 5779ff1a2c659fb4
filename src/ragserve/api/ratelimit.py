"""Rate limits and quotas at the API edge (``security/ratelimit``): the client IP's bucket before
authentication, the caller's bucket and the tenant's request quota after it (both through ``deps.require``),
the LLM token quota on answer routes and the ingested-bytes quota on ingest routes. Health, readiness and
metrics never authenticate, so they are never limited."""

from __future__ import annotations

from functools import partial

import anyio.to_thread
from fastapi import Request

from ragserve.domain import DocumentInput, Principal
from ragserve.llm.gateway import bind_token_charge
from ragserve.security.ratelimit.factory import Limits
from ragserve.security.ratelimit.policy import client_ip


def get_limits(request: Request) -> Limits | None:
    limits: Limits | None = getattr(request.app.state, "limits", None)
    return limits


async def limit_client(request: Request) -> None:
    """A dependency: raises ``RateLimitedError`` when the client IP is over its rate."""
    limits = get_limits(request)
    if limits is None:
        return
    peer = request.client.host if request.client is not None else None
    ip = client_ip(peer, request.headers.getlist("x-forwarded-for"), limits.rates.trusted_proxies)
    await limits.rates.check_client(ip)


async def limit_caller(request: Request, principal: Principal) -> None:
    """Raises ``RateLimitedError`` when the caller is over its rate, ``QuotaExceededError`` when its tenant
    made its daily requests."""
    limits = get_limits(request)
    if limits is not None:
        await limits.rates.check_principal(principal)
        await limits.quotas.charge_request(principal.tenant)


async def check_llm_quota(request: Request, principal: Principal) -> None:
    """Before an answer: raises ``QuotaExceededError`` when the tenant spent its LLM tokens for the day, and
    charges the tokens this request spends to it."""
    limits = get_limits(request)
    if limits is None or not limits.quotas.limits_llm_tokens:
        return
    await limits.quotas.check_llm_tokens(principal.tenant)
    bind_token_charge(principal.label, partial(limits.quotas.charge_llm_tokens, principal.tenant))


def input_bytes(inputs: list[DocumentInput]) -> int:
    """What documents weigh for the ingested-bytes quota: file bytes, or inline text as UTF-8."""
    return sum(len(i.content) if i.content is not None else len((i.text or "").encode()) for i in inputs)


async def charge_ingest_bytes(request: Request, principal: Principal, size: int, documents: int) -> None:
    """Before staging documents: raises ``QuotaExceededError`` when ``size`` more bytes would take the tenant
    over its daily ingest quota, or ``documents`` more (each at least one chunk) over its stored chunks. Chunks
    are counted only once files are parsed, so the last job accepted may take a tenant past that quota."""
    limits = get_limits(request)
    if limits is None:
        return
    if limits.quotas.limits_stored_chunks and documents:
        store = request.app.state.service.store
        stored = await anyio.to_thread.run_sync(store.tenant_chunk_count, principal.tenant)
        limits.quotas.check_stored_chunks(principal.tenant, stored, documents)
    await limits.quotas.charge_ingest_bytes(principal.tenant, size)
