"""Checks a submission passes before anything of it is stored: sizes, counts and file types, and that the
caller may replace each existing document an external id names; and the hash that ties an idempotency key to
its request."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Protocol

from ragserve.domain import Collection, Document, DocumentInput, Principal
from ragserve.errors import NotFoundError, PayloadTooLargeError, PermissionDeniedError, UnsupportedMediaTypeError
from ragserve.ingest.loaders import is_supported
from ragserve.settings import LimitSettings


class ExternalIdLookup(Protocol):
    def get_collection(self, name: str, tenant: str) -> Collection: ...

    def find_document(self, collection_id: str, external_id: str) -> Document | None: ...


def check_inputs(inputs: Sequence[DocumentInput], limits: LimitSettings) -> None:
    """Raises ``PayloadTooLargeError`` (too many documents, one too large) or ``UnsupportedMediaTypeError``."""
    if len(inputs) > limits.max_documents_per_request:
        raise PayloadTooLargeError(
            f"{len(inputs)} documents in one request; the limit is {limits.max_documents_per_request}"
        )
    for item in inputs:
        size = len(item.content) if item.content is not None else len((item.text or "").encode())
        if size > limits.max_upload_bytes:
            name = item.filename or item.external_id or "a document"
            raise PayloadTooLargeError(f"{name} has {size} bytes; the limit is {limits.max_upload_bytes}")
        if item.content is not None and not is_supported(item.filename or ""):
            raise UnsupportedMediaTypeError(
                f"{item.filename or 'the file'}: unsupported file type; send .txt, .md, .html, .pdf, "
                ".docx, .json or .jsonl"
            )


def check_replaceable(store: ExternalIdLookup, inputs: Sequence[DocumentInput], principal: Principal) -> None:
    """An input with the external id of an existing document replaces it, content and ACL: only a caller who
    may read that document may do so, or a writer outside its ACL could overwrite it or open it up.
    Raises ``PermissionDeniedError``."""
    collections: dict[str, str | None] = {}
    for item in inputs:
        if item.external_id is None:
            continue
        if item.collection not in collections:
            try:
                collections[item.collection] = store.get_collection(item.collection, principal.tenant).id
            except NotFoundError:
                collections[item.collection] = None
        collection_id = collections[item.collection]
        existing = None if collection_id is None else store.find_document(collection_id, item.external_id)
        if existing is not None and not principal.access.can_read(existing):
            raise PermissionDeniedError(
                f"external id {item.external_id!r} in collection {item.collection!r} belongs to a document "
                "this caller may not read, so it may not replace it"
            )


def hash_request(inputs: Sequence[DocumentInput]) -> str:
    """What an idempotency key is bound to: a replay with another request under the same key is refused."""
    digest = hashlib.sha256()
    for item in inputs:
        head = [item.collection, item.external_id, item.title, item.filename, item.metadata]
        digest.update(json.dumps(head, sort_keys=True).encode())
        digest.update(item.content if item.content is not None else (item.text or "").encode())
    return digest.hexdigest()
