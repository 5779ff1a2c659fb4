"""Dead letters: ingestion items whose broker message exhausted its retries (the store or the model kept
failing), kept with their input. Requeue them once the cause is fixed. ``ragserve dlq`` calls these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from ragserve.api.deps import AdminPrincipal, AuditDep, ServiceDep, require
from ragserve.api.schemas import ErrorResponse, JobErrorPublic
from ragserve.domain import DeadLetter

router = APIRouter(prefix="/v1/dead-letters", tags=["jobs"], dependencies=[Depends(require("admin"))])
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404, 422)}


class DeadLetterPublic(BaseModel):
    job_id: str
    seq: int
    document_id: str
    error: JobErrorPublic
    updated_at: datetime

    @classmethod
    def of(cls, dead: DeadLetter) -> DeadLetterPublic:
        error = JobErrorPublic(
            document_id=dead.error.document_id,
            filename=dead.error.filename,
            code=dead.error.code,
            message=dead.error.message,
        )
        return cls(
            job_id=dead.job_id, seq=dead.seq, document_id=dead.document_id, error=error, updated_at=dead.updated_at
        )


class DeadLetterList(BaseModel):
    items: list[DeadLetterPublic]


class RequeueRequest(BaseModel):
    job_id: str | None = Field(default=None, max_length=64, description="only this job's items; none: all")


class RequeueResponse(BaseModel):
    requeued: int


@router.get("", response_model=DeadLetterList, responses=_ERRORS)
async def list_dead_letters(
    service: ServiceDep, principal: AdminPrincipal, limit: int = Query(default=100, ge=1, le=1000)
) -> DeadLetterList:
    """The caller's tenant's dead-lettered items, most recent first."""
    return DeadLetterList(items=[DeadLetterPublic.of(d) for d in await service.dead_letters(limit, principal)])


@router.post("/requeue", response_model=RequeueResponse, responses=_ERRORS)
async def requeue(
    body: RequeueRequest, service: ServiceDep, principal: AdminPrincipal, audit: AuditDep
) -> RequeueResponse:
    """Put the tenant's dead-lettered items back in the queue (their jobs run again from where they stopped)."""
    requeued = await service.requeue_dead(body.job_id, principal)
    await audit.record("dlq.requeue", f"job:{body.job_id}" if body.job_id else None, requeued=requeued)
    return RequeueResponse(requeued=requeued)
