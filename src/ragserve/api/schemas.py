"""Request and response bodies of API v1: the contract the UI, later issues and users rely on."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ragserve.domain import (
    Acl,
    Answer,
    Chunk,
    Citation,
    CollectionSummary,
    Document,
    Job,
    Metadata,
    SearchHit,
    SearchResult,
)
from ragserve.ingest.sync import SyncReport


class AclBody(BaseModel):
    """Who may read a document within the tenant. No ACL at all: everyone in the tenant."""

    model_config = ConfigDict(extra="forbid")

    users: list[str] = Field(default_factory=list, max_length=1000)
    groups: list[str] = Field(default_factory=list, max_length=1000)
    public: bool = False

    def to_acl(self) -> Acl:
        """Raises ``InvalidRequestError`` for a bad name."""
        return Acl.of(self.users, self.groups, self.public)

    @classmethod
    def of(cls, acl: Acl | None) -> AclBody | None:
        return None if acl is None else cls(users=list(acl.users), groups=list(acl.groups), public=acl.public)


class DocumentCreateItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: str | None = Field(default=None, max_length=512)
    title: str | None = Field(default=None, max_length=2000)
    text: str | None = None
    filename: str | None = Field(default=None, max_length=512)
    content_base64: str | None = None
    metadata: Metadata = Field(default_factory=dict)
    acl: AclBody | None = None


class DocumentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(default=None, min_length=1, max_length=128)
    documents: list[DocumentCreateItem]


class DocumentUpsert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(default=None, min_length=1, max_length=128)
    title: str | None = Field(default=None, max_length=2000)
    text: str | None = None
    filename: str | None = Field(default=None, max_length=512)
    content_base64: str | None = None
    metadata: Metadata = Field(default_factory=dict)
    acl: AclBody | None = None


class JobAccepted(BaseModel):
    job_id: str
    document_ids: list[str]


class SyncFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=512, description="relative, '/'-separated: the external id")
    content_base64: str


class SyncRequest(BaseModel):
    """The source's complete listing: files absent from it are deleted when ``delete_missing``."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=512, description="names the source; a sync deletes only its own")
    files: list[SyncFile]
    delete_missing: bool = True
    dry_run: bool = False


class SyncResponse(BaseModel):
    """Paths by what the sync did to them (would do, on a dry run), and the jobs ingesting the added and
    updated files, one per ``max_documents_per_request`` of them."""

    job_ids: list[str]
    added: list[str]
    updated: list[str]
    deleted: list[str]
    unchanged: int
    conflicts: list[str]
    skipped: list[str]

    @classmethod
    def of(cls, report: SyncReport) -> SyncResponse:
        plan = report.plan
        return cls(
            job_ids=[job.id for job in report.jobs],
            added=list(plan.to_add),
            updated=list(plan.to_update),
            deleted=[d.external_id for d in plan.to_delete],
            unchanged=len(plan.unchanged),
            conflicts=list(plan.conflicts),
            skipped=list(report.skipped),
        )


class JobProgressPublic(BaseModel):
    stage: str
    done: int
    total: int


class JobErrorPublic(BaseModel):
    document_id: str | None
    filename: str | None
    code: str
    message: str


class JobPublic(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "partial"]
    progress: JobProgressPublic
    errors: list[JobErrorPublic]
    document_ids: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        return cls(
            id=job.id,
            status=job.status.value,
            progress=JobProgressPublic(stage=job.progress.stage, done=job.progress.done, total=job.progress.total),
            errors=[
                JobErrorPublic(document_id=e.document_id, filename=e.filename, code=e.code, message=e.message)
                for e in job.errors
            ],
            document_ids=list(job.document_ids),
            created_at=job.created_at,
            updated_at=job.updated_at,
        )


class ChunkPublic(BaseModel):
    chunk_id: int
    ordinal: int
    text: str
    section: str | None
    page: int | None
    token_count: int

    @classmethod
    def of(cls, chunk: Chunk) -> ChunkPublic:
        return cls(
            chunk_id=chunk.id,
            ordinal=chunk.ordinal,
            text=chunk.text,
            section=chunk.section,
            page=chunk.page,
            token_count=chunk.token_count,
        )


class DocumentPublic(BaseModel):
    id: str
    collection: str
    external_id: str | None
    title: str | None
    source: str | None
    metadata: Metadata
    status: Literal["pending", "ready"]
    chunk_count: int
    created_at: datetime
    updated_at: datetime
    acl: AclBody | None = None
    chunks: list[ChunkPublic] | None = None

    @classmethod
    def of(cls, document: Document, chunks: list[Chunk] | None = None) -> DocumentPublic:
        return cls(
            id=document.id,
            collection=document.collection,
            external_id=document.external_id,
            title=document.title,
            source=document.source,
            metadata=document.metadata,
            status=document.status.value,
            chunk_count=document.chunk_count,
            created_at=document.created_at,
            updated_at=document.updated_at,
            acl=AclBody.of(document.acl),
            chunks=None if chunks is None else [ChunkPublic.of(c) for c in chunks],
        )


class DocumentList(BaseModel):
    documents: list[DocumentPublic]
    total: int
    limit: int
    offset: int


class CollectionPublic(BaseModel):
    name: str
    document_count: int


class CollectionList(BaseModel):
    collections: list[CollectionPublic]

    @classmethod
    def of(cls, summaries: list[CollectionSummary]) -> CollectionList:
        return cls(collections=[CollectionPublic(name=c.name, document_count=c.document_count) for c in summaries])


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str
    k: int = Field(default=10, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=10_000)
    collection: str | None = Field(default=None, min_length=1, max_length=128)
    filters: Metadata | None = None
    mode: Literal["hybrid", "dense", "keyword"] | None = None


class SearchResultPublic(BaseModel):
    chunk_id: int
    document_id: str
    external_id: str | None
    title: str | None
    source: str | None
    text: str
    score: float
    metadata: Metadata
    section: str | None
    page: int | None

    @classmethod
    def of(cls, hit: SearchHit) -> SearchResultPublic:
        return cls(
            chunk_id=hit.chunk_id,
            document_id=hit.document_id,
            external_id=hit.external_id,
            title=hit.title,
            source=hit.source,
            text=hit.text,
            score=hit.score,
            metadata=hit.metadata,
            section=hit.section,
            page=hit.page,
        )


class SearchResponse(BaseModel):
    results: list[SearchResultPublic]
    mode: Literal["hybrid", "dense", "keyword"]
    degraded: bool = False
    index_version: int | None = Field(default=None, description="the collection's index version that answered")

    @classmethod
    def of(cls, result: SearchResult) -> SearchResponse:
        return cls(
            results=[SearchResultPublic.of(h) for h in result.hits],
            mode=result.mode,
            degraded=result.degraded,
            index_version=result.index_version,
        )


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str
    k: int | None = Field(default=None, ge=1, le=50)
    collection: str | None = Field(default=None, min_length=1, max_length=128)
    filters: Metadata | None = None
    stream: bool = False


class CitationPublic(BaseModel):
    index: int
    chunk_id: int
    document_id: str
    external_id: str | None
    source: str | None
    title: str | None
    quote: str

    @classmethod
    def of(cls, c: Citation) -> CitationPublic:
        return cls(
            index=c.index,
            chunk_id=c.chunk_id,
            document_id=c.document_id,
            external_id=c.external_id,
            source=c.source,
            title=c.title,
            quote=c.quote,
        )


class AnswerResponse(BaseModel):
    answer: str
    abstained: bool
    citations: list[CitationPublic]
    generator: str

    @classmethod
    def of(cls, answer: Answer) -> AnswerResponse:
        return cls(
            answer=answer.text,
            abstained=answer.abstained,
            citations=[CitationPublic.of(c) for c in answer.citations],
            generator=answer.generator,
        )


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    """``checks``: database, index, model and capacity (requests in flight within the limit); ``failed``
    names the checks that did not pass."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, bool]
    failed: list[str] = []
