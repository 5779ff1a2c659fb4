"""Document routes: submit (JSON or multipart), list, read, delete, upsert by external id."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from ragserve.api.deps import AuditDep, IngestPrincipal, QueryPrincipal, ServiceDep
from ragserve.api.ratelimit import charge_ingest_bytes, input_bytes
from ragserve.api.schemas import (
    AclBody,
    DocumentCreate,
    DocumentCreateItem,
    DocumentList,
    DocumentPublic,
    DocumentUpsert,
    ErrorResponse,
    JobAccepted,
)
from ragserve.domain import Acl, DocumentInput, Metadata
from ragserve.errors import (
    InvalidEncodingError,
    InvalidRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)

router = APIRouter(prefix="/v1/documents", tags=["documents"])
MAX_OFFSET = 2**63 - 1  # SQLite and PostgreSQL integers are 64-bit: a larger offset cannot reach the query

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 409, 413, 415, 422, 429)
}
_CREATE_BODY = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": DocumentCreate.model_json_schema(ref_template="#/components/schemas/{model}")
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "collection": {"type": "string"},
                        "metadata": {"type": "string", "description": "a JSON object applied to every file"},
                        "acl": {
                            "type": "string",
                            "description": 'a JSON ACL for every file: {"users": [], "groups": [], "public": false}',
                        },
                    },
                    "required": ["files"],
                }
            },
        },
        "required": True,
    }
}


def decode_base64(content_base64: str, where: str) -> bytes:
    try:
        return base64.b64decode(content_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(f"{where}.content_base64 is not valid base64") from exc


def to_input(
    item: DocumentCreateItem | DocumentUpsert, collection: str, where: str, external_id: str | None = None
) -> DocumentInput:
    if (item.text is None) == (item.content_base64 is None):
        raise InvalidRequestError(f"{where}: give exactly one of text or content_base64")
    content = None
    if item.content_base64 is not None:
        if not item.filename:
            raise InvalidRequestError(
                f"{where}: filename is required with content_base64 (its extension picks the parser)"
            )
        content = decode_base64(item.content_base64, where)
    ext_id = external_id if external_id is not None else getattr(item, "external_id", None)
    return DocumentInput(
        collection=collection,
        external_id=ext_id,
        title=item.title,
        text=item.text,
        filename=item.filename,
        content=content,
        metadata=item.metadata,
        acl=None if item.acl is None else item.acl.to_acl(),
    )


async def _json_inputs(request: Request, default_collection: str) -> list[DocumentInput]:
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEncodingError(f"the request body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        payload = DocumentCreate.model_validate_json(text)
    except ValidationError as exc:
        from fastapi.exceptions import RequestValidationError

        raise RequestValidationError(exc.errors(include_url=False)) from exc
    if not payload.documents:
        raise InvalidRequestError("documents is empty")
    collection = payload.collection or default_collection
    return [to_input(item, collection, f"documents[{i}]") for i, item in enumerate(payload.documents)]


async def _multipart_inputs(
    request: Request, default_collection: str, max_files: int, max_bytes: int
) -> list[DocumentInput]:
    # ``async with`` closes the spooled upload files even when a check below raises.
    async with request.form(max_files=max_files + 1, max_fields=20) as form:
        uploads = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not uploads:
            raise InvalidRequestError("the form has no files; send them in the 'files' field")
        if len(uploads) > max_files:
            raise PayloadTooLargeError(f"{len(uploads)} files in one request; the limit is {max_files}")
        collection = str(form.get("collection") or default_collection)
        metadata = _form_metadata(form.get("metadata"))
        acl = _form_acl(form.get("acl"))
        inputs = []
        for upload in uploads:
            data = await upload.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise PayloadTooLargeError(f"{upload.filename} is over the upload limit of {max_bytes} bytes")
            inputs.append(
                DocumentInput(
                    collection=collection,
                    filename=upload.filename or "upload",
                    content=data,
                    metadata=metadata,
                    acl=acl,
                )
            )
        return inputs


def _form_acl(raw: object) -> Acl | None:
    if not raw:
        return None
    try:
        return AclBody.model_validate_json(str(raw)).to_acl()
    except ValidationError as exc:
        raise InvalidRequestError(f"the 'acl' field is not a valid ACL: {exc.errors()[0]['msg']}") from exc


def _form_metadata(raw: object) -> Metadata:
    if not raw:
        return {}
    try:
        metadata = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise InvalidRequestError("the 'metadata' field is not valid JSON") from exc
    if not isinstance(metadata, dict):
        raise InvalidRequestError("the 'metadata' field must be a JSON object")
    return metadata


@router.post(
    "",
    status_code=202,
    response_model=JobAccepted,
    responses=_ERRORS,
    openapi_extra=_CREATE_BODY,
)
async def create_documents(
    request: Request,
    service: ServiceDep,
    principal: IngestPrincipal,
    audit: AuditDep,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
) -> JobAccepted:
    """Submit documents for ingestion: a JSON body or multipart files. Returns the job that ingests them."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limits = service.settings.limits
    if content_type == "application/json":
        inputs = await _json_inputs(request, service.settings.default_collection)
    elif content_type == "multipart/form-data":
        inputs = await _multipart_inputs(
            request,
            service.settings.default_collection,
            limits.max_documents_per_request,
            limits.max_upload_bytes,
        )
    else:
        raise UnsupportedMediaTypeError("send application/json or multipart/form-data")
    await charge_ingest_bytes(request, principal, input_bytes(inputs), len(inputs))
    job = await service.submit(inputs, idempotency_key, principal)
    await audit.record(
        "documents.ingest", f"collection:{inputs[0].collection}", job_id=job.id, document_count=len(inputs)
    )
    return JobAccepted(job_id=job.id, document_ids=list(job.document_ids))


@router.get("", response_model=DocumentList, responses=_ERRORS)
async def list_documents(
    service: ServiceDep,
    principal: QueryPrincipal,
    collection: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> DocumentList:
    """The documents of the caller's tenant that it may read, newest first."""
    documents, total = await service.list_documents(collection, limit, offset, principal)
    return DocumentList(documents=[DocumentPublic.of(d) for d in documents], total=total, limit=limit, offset=offset)


@router.get("/{document_id}", response_model=DocumentPublic, responses=_ERRORS)
async def get_document(
    document_id: str,
    service: ServiceDep,
    principal: QueryPrincipal,
    include_chunks: Annotated[bool, Query()] = False,
) -> DocumentPublic:
    """404 as well for a document the caller may not read."""
    document, chunks = await service.get_document(document_id, principal)
    return DocumentPublic.of(document, chunks if include_chunks else None)


@router.delete("/{document_id}", status_code=204, responses=_ERRORS)
async def delete_document(
    document_id: str, service: ServiceDep, principal: IngestPrincipal, audit: AuditDep
) -> Response:
    await service.delete_document(document_id, principal)
    await audit.record("document.delete", f"document:{document_id}")
    return Response(status_code=204)


@router.patch("/{document_id}/acl", response_model=DocumentPublic, responses=_ERRORS)
async def set_document_acl(
    document_id: str, body: AclBody, service: ServiceDep, principal: IngestPrincipal, audit: AuditDep
) -> DocumentPublic:
    """Replace who may read the document, at once and without re-embedding it (``{"public": true}``: the whole
    tenant). Answers cached from it are dropped."""
    document = await service.set_acl(document_id, body.to_acl(), principal)
    acl = body.to_acl()
    await audit.record("document.acl", f"document:{document_id}", users=len(acl.users), groups=len(acl.groups))
    return DocumentPublic.of(document)


@router.put(
    "/by-external-id/{external_id:path}",
    status_code=202,
    response_model=JobAccepted,
    responses=_ERRORS,
)
async def upsert_document(
    request: Request,
    external_id: str,
    body: DocumentUpsert,
    service: ServiceDep,
    principal: IngestPrincipal,
    audit: AuditDep,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
) -> JobAccepted:
    """Create or replace the document with this external id; only chunks whose text changed are re-embedded."""
    collection = body.collection or service.settings.default_collection
    item = to_input(body, collection, "body", external_id=external_id)
    await charge_ingest_bytes(request, principal, input_bytes([item]), 1)
    job = await service.submit([item], idempotency_key, principal)
    target = f"document:{job.document_ids[0]}" if job.document_ids else None
    await audit.record("document.upsert", target, collection=collection, external_id=external_id, job_id=job.id)
    return JobAccepted(job_id=job.id, document_ids=list(job.document_ids))
