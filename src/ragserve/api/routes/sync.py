"""Source sync: apply a source's new, changed and deleted files to a collection (``ingest/sync.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from ragserve.api.deps import AuditDep, IngestPrincipal, ServiceDep, require
from ragserve.api.ratelimit import charge_ingest_bytes, get_limits
from ragserve.api.routes.documents import decode_base64
from ragserve.api.schemas import ErrorResponse, SyncRequest, SyncResponse
from ragserve.ingest.sync import SourceFile, checked_path

router = APIRouter(prefix="/v1/collections", tags=["collections"], dependencies=[Depends(require("ingest"))])

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 413, 422, 429)}


@router.post("/{name}/sync", status_code=202, response_model=SyncResponse, responses=_ERRORS)
async def sync_collection(
    request: Request, name: str, body: SyncRequest, service: ServiceDep, principal: IngestPrincipal, audit: AuditDep
) -> SyncResponse:
    """Make the collection hold the source's files: ingest new and changed ones (by path as external id),
    delete the source's documents of files not listed, leave unchanged ones alone. Files of unsupported
    types are skipped."""
    files = [
        SourceFile.of_bytes(checked_path(f.path, f"files[{i}].path"), decode_base64(f.content_base64, f"files[{i}]"))
        for i, f in enumerate(body.files)
    ]
    limits = get_limits(request)
    quotas = None if limits is None else limits.quotas
    if quotas is not None and (quotas.limits_ingest_bytes or quotas.limits_stored_chunks) and not body.dry_run:
        # Only new and changed files are ingested, so only they count: a dry run says which, before staging.
        dry = await service.sync(
            name, body.source, files, delete_missing=body.delete_missing, dry_run=True, principal=principal
        )
        sizes = {f.path: len(f.read()) for f in files}
        submitted = dry.plan.to_submit
        await charge_ingest_bytes(request, principal, sum(sizes[path] for path in submitted), len(submitted))
    report = await service.sync(
        name, body.source, files, delete_missing=body.delete_missing, dry_run=body.dry_run, principal=principal
    )
    response = SyncResponse.of(report)
    if not body.dry_run:
        await audit.record(
            "sync",
            f"collection:{name}",
            source=body.source,
            job_ids=",".join(response.job_ids),
            added=len(response.added),
            updated=len(response.updated),
            deleted=len(response.deleted),
        )
    return response
