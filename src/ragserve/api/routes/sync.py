"""Source sync: apply a source's new, changed and deleted files to a collection (``ingest/sync.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from ragserve.api.deps import AuditDep, IngestPrincipal, ServiceDep, require
from ragserve.api.routes.documents import decode_base64
from ragserve.api.schemas import ErrorResponse, SyncRequest, SyncResponse
from ragserve.ingest.sync import SourceFile, checked_path

router = APIRouter(prefix="/v1/collections", tags=["collections"], dependencies=[Depends(require("ingest"))])

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 413, 422)}


@router.post("/{name}/sync", status_code=202, response_model=SyncResponse, responses=_ERRORS)
async def sync_collection(
    name: str, body: SyncRequest, service: ServiceDep, principal: IngestPrincipal, audit: AuditDep
) -> SyncResponse:
    """Make the collection hold the source's files: ingest new and changed ones (by path as external id),
    delete the source's documents of files not listed, leave unchanged ones alone. Files of unsupported
    types are skipped."""
    files = [
        SourceFile.of_bytes(checked_path(f.path, f"files[{i}].path"), decode_base64(f.content_base64, f"files[{i}]"))
        for i, f in enumerate(body.files)
    ]
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
