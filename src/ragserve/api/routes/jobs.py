"""Job status."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ragserve.api.deps import IngestPrincipal, ServiceDep, require
from ragserve.api.schemas import ErrorResponse, JobPublic

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require("ingest"))])


@router.get("/{job_id}", response_model=JobPublic, responses={404: {"model": ErrorResponse}})
async def get_job(job_id: str, service: ServiceDep, principal: IngestPrincipal) -> JobPublic:
    return JobPublic.of(await service.get_job(job_id, principal))
