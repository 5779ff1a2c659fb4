"""Job records shared by every job store: how a staged input is kept, how a job is cut into broker messages,
how item counts make a job status, and how an item's error is kept."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from ragserve.domain import DEFAULT_TENANT, Acl, DocumentInput, JobError, JobStatus


def encode_input(item: DocumentInput) -> bytes:
    payload = {
        "collection": item.collection,
        "external_id": item.external_id,
        "title": item.title,
        "text": item.text,
        "filename": item.filename,
        "content": None if item.content is None else base64.b64encode(item.content).decode("ascii"),
        "metadata": item.metadata,
        "tenant": item.tenant,
        "acl": acl_to_json(item.acl),
    }
    return zlib.compress(json.dumps(payload).encode("utf-8"), level=1)


def decode_input(blob: bytes) -> DocumentInput:
    payload = json.loads(zlib.decompress(blob))
    content = payload["content"]
    return DocumentInput(
        collection=payload["collection"],
        external_id=payload["external_id"],
        title=payload["title"],
        text=payload["text"],
        filename=payload["filename"],
        content=None if content is None else base64.b64decode(content),
        metadata=payload["metadata"],
        tenant=payload.get("tenant", DEFAULT_TENANT),  # staged before tenants existed
        acl=acl_from_json(payload.get("acl")),
    )


def job_tenant(inputs: Sequence[DocumentInput]) -> str:
    """The tenant a job belongs to: its inputs' (the service never mixes tenants in one job)."""
    tenants = {item.tenant for item in inputs}
    if len(tenants) > 1:
        raise ValueError("a job's documents must belong to one tenant")
    return tenants.pop() if tenants else DEFAULT_TENANT


def acl_to_json(acl: Acl | None) -> dict[str, object] | None:
    """An ACL as stored in a document row (JSON): None for no ACL."""
    if acl is None:
        return None
    return {"users": list(acl.users), "groups": list(acl.groups), "public": acl.public}


def acl_from_json(data: object) -> Acl | None:
    if data is None:
        return None
    if isinstance(data, str | bytes):
        data = json.loads(data)
    assert isinstance(data, dict)
    return Acl(tuple(data.get("users", ())), tuple(data.get("groups", ())), bool(data.get("public", False)))


@dataclass(frozen=True, slots=True)
class OutboxPolicy:
    """How a job is cut into broker messages, and their priority: small jobs first, so one huge upload does
    not starve small ones (the broker's queue is a priority queue)."""

    items_per_message: int = 16
    small_job_items: int = 16

    def messages(self, seqs: list[int]) -> list[list[int]]:
        step = self.items_per_message
        return [seqs[i : i + step] for i in range(0, len(seqs), step)]

    def priority(self, job_items: int) -> int:
        if job_items <= self.small_job_items:
            return 9
        return 5 if job_items <= 10 * self.small_job_items else 1


def job_status(counts: dict[str, int], total: int) -> JobStatus:
    done, failed = counts.get("done", 0), counts.get("failed", 0) + counts.get("dead", 0)
    if done + failed >= total:
        if failed == 0:
            return JobStatus.SUCCEEDED
        return JobStatus.FAILED if done == 0 else JobStatus.PARTIAL
    if counts.get("running", 0) or done or failed:
        return JobStatus.RUNNING
    return JobStatus.QUEUED


def error_json(error: JobError) -> str:
    return json.dumps(
        {"document_id": error.document_id, "filename": error.filename, "code": error.code, "message": error.message}
    )


def within_bytes(sizes: Sequence[int | None], max_bytes: int | None) -> int:
    """How many of the items, in order, a claim takes: those whose predecessors' payloads sum under
    ``max_bytes`` (all with None; at least one)."""
    if max_bytes is None:
        return len(sizes)
    taken = total = 0
    for size in sizes:
        if taken and total >= max_bytes:
            break
        taken += 1
        total += size or 0
    return taken
