"""Source sync: apply a source's new, changed and deleted files to a collection (``ingest/sync.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from ragserve.api.deps import IngestPrincipal, ServiceDep, require
from ragserve.api.ratelimit import charge_ingest_bytes, get_limits
from ragserve.api.routes.documents import decode_base64
from ragserve.api.schemas import ErrorResponse, SyncRequest, SyncResponse
from ragserve.ingest.sync import SourceFile, checked_path

router = APIRouter(prefix="/v1/collections", tags=["collections"], dependencies=[Depends(require("ingest"))])

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 413, 422, 429)}


@router.post("/{name}/sync", status_code=202, response_model=SyncResponse, responses=_ERRORS)
async def sync_collection(
    request: Request, name: str, body: SyncRequest, service: ServiceDep, principal: IngestPrincipal
) -> SyncResponse:
    """Make the collection hold the source's files: ingest new and changed ones (by path as external id),
    delete the source's documents of files not listed, leave unchanged ones alone. Files of unsupported
    types are skipped."""
    files = [
        SourceFile.of_bytes(checked_path(f.path, f"files[{i}].path"), decode_base64(f.content_base64, f"files[{i}]"))
        for i, f in enumerate(body.files)
    ]
    limits = get_limits(request)
    if limits is not None and limits.quotas.limits_ingest_bytes and not body.dry_run:
        # Only new and changed files are ingested, so only they count: a dry run says which, before staging.
        plan = (await service.sync(name, body.source, files, delete_missing=body.delete_missing, dry_run=True)).plan
        sizes = {f.path: len(f.read()) for f in files}
        await charge_ingest_bytes(request, principal, sum(sizes[path] for path in plan.to_submit))
    report = await service.sync(name, body.source, files, delete_missing=body.delete_missing, dry_run=body.dry_run)
    return SyncResponse.of(report)
