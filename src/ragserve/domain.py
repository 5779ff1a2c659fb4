"""Typed domain objects shared by every part of ragserve.

Everything that crosses a seam (a ``protocol.py``) is one of these frozen dataclasses, never a raw dict or a
backend's own object. Metadata values are JSON scalars or lists of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal, TypeAlias

from ragserve.errors import InvalidRequestError

JsonScalar: TypeAlias = str | int | float | bool | None
MetadataValue: TypeAlias = JsonScalar | list[JsonScalar]
Metadata: TypeAlias = dict[str, MetadataValue]

SearchMode: TypeAlias = Literal["hybrid", "dense", "keyword"]

_FILTER_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
DEFAULT_TENANT = "default"


# --- parsing and chunking -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextBlock:
    """A run of text from a parsed file: a paragraph, list item or table row, with where it came from."""

    text: str
    section_path: tuple[str, ...] = ()
    page: int | None = None


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A file turned into ordered text blocks; ``title`` is what the file itself declares, if anything."""

    blocks: tuple[TextBlock, ...]
    title: str | None = None


@dataclass(frozen=True, slots=True)
class ChunkDraft:
    """A chunk before it is stored: text bounded in model tokens, with its position in the document."""

    ordinal: int
    text: str
    section_path: tuple[str, ...] = ()
    page: int | None = None
    token_count: int = 0


# --- stored objects --------------------------------------------------------------------------------------


class DocumentStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"


@dataclass(frozen=True, slots=True)
class Collection:
    id: str
    name: str
    created_at: datetime
    tenant: str = DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class CollectionSummary:
    """A collection's name and how many documents it holds (pending ones included)."""

    name: str
    document_count: int


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    collection: str
    external_id: str | None
    title: str | None
    source: str | None
    metadata: Metadata
    status: DocumentStatus
    content_hash: str | None
    chunk_count: int
    created_at: datetime
    updated_at: datetime
    tenant: str = DEFAULT_TENANT
    acl: Acl | None = None  # None: every caller of the tenant may read it


@dataclass(frozen=True, slots=True)
class Chunk:
    """A stored chunk; ``id`` is the backend's integer key, also the label in the vector index."""

    id: int
    document_id: str
    ordinal: int
    text: str
    section: str | None
    page: int | None
    token_count: int
    content_hash: str


@dataclass(frozen=True, slots=True)
class NewChunk:
    """A chunk ready to be written: its text, position, the hash it is cached under and its unit vector."""

    ordinal: int
    text: str
    section: str | None
    page: int | None
    token_count: int
    content_hash: str
    vector: bytes  # float32 little-endian, L2-normalised


# --- security ------------------------------------------------------------------------------------------------

Scope: TypeAlias = Literal["query", "ingest", "admin"]
SCOPES: tuple[Scope, ...] = ("query", "ingest", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an API key (``key_id``) or a token's subject, its tenant, groups and scopes."""

    subject: str
    tenant: str
    scopes: frozenset[str]
    groups: tuple[str, ...] = ()
    key_id: str | None = None
    user: str | None = None  # the name document ACLs list in ``users`` (a JWT's subject, a key's user)

    @property
    def label(self) -> str:
        """A name for metrics and logs that is never a secret."""
        return self.key_id or self.subject

    @property
    def access(self) -> Access:
        """What this caller may read: its tenant's documents whose ACL admits it; every document of its tenant
        with the ``admin`` scope."""
        return Access(self.tenant, self.user, tuple(sorted(set(self.groups))), unrestricted="admin" in self.scopes)


ANONYMOUS = Principal(subject="anonymous", tenant=DEFAULT_TENANT, scopes=frozenset(SCOPES))

_ACL_NAME = re.compile(r"^[^\x00-\x1f]{1,256}$")
_ACL_MAX_ENTRIES = 1000


@dataclass(frozen=True, slots=True)
class Acl:
    """Who may read a document within its tenant: anyone (``public``), or the listed users and groups."""

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    public: bool = False

    @classmethod
    def of(cls, users: list[str] | tuple[str, ...], groups: list[str] | tuple[str, ...], public: bool) -> Acl:
        """Sorted and without duplicates. Raises ``InvalidRequestError`` for an empty or control-character name
        or more than 1,000 entries."""
        for name in (*users, *groups):
            if not _ACL_NAME.match(name):
                raise InvalidRequestError(f"ACL entry {name[:40]!r} must be 1-256 printable characters")
        if len(users) + len(groups) > _ACL_MAX_ENTRIES:
            raise InvalidRequestError(f"an ACL holds at most {_ACL_MAX_ENTRIES} users and groups")
        return cls(tuple(sorted(set(users))), tuple(sorted(set(groups))), public)

    def admits(self, access: Access) -> bool:
        return (
            access.unrestricted
            or self.public
            or (access.user is not None and access.user in self.users)
            or not set(self.groups).isdisjoint(access.groups)
        )


@dataclass(frozen=True, slots=True)
class Access:
    """A caller's permission set: its tenant, user name and groups. ``unrestricted`` reads every document of
    the tenant (admins, and the local operator when authentication is off)."""

    tenant: str
    user: str | None = None
    groups: tuple[str, ...] = ()
    unrestricted: bool = False

    def can_read(self, document: Document) -> bool:
        """Whether ``document`` is this caller's to see: its tenant, and an ACL that admits the caller."""
        if document.tenant != self.tenant:
            return False
        return document.acl is None or document.acl.admits(self)

    @property
    def fingerprint(self) -> str:
        """Equal for callers who may read the same documents (a cache scope; never a secret)."""
        if self.unrestricted:
            return f"{self.tenant}\x00*"
        return "\x00".join([self.tenant, self.user or "", *self.groups])


UNRESTRICTED = Access(DEFAULT_TENANT, unrestricted=True)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored: never the key itself, only ``id`` (its public part) and a keyed hash."""

    id: str
    name: str
    tenant: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    user: str | None = None  # who the key acts for in document ACLs
    groups: tuple[str, ...] = ()


# --- index versions ----------------------------------------------------------------------------------------


class IndexState(StrEnum):
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"


# How an index version keeps its vectors for search: as stored (f32), or as compact codes whose top candidates
# are rescored with the stored vectors (the embedded index: f16, int8, binary; pgvector: f16, binary).
VectorPrecision = Literal["f32", "f16", "int8", "binary"]


@dataclass(frozen=True, slots=True)
class IndexConfig:
    """What makes one index version of a collection differ from another: how documents are chunked, which
    embedding model embeds the chunks, and the precision its vectors are searched at."""

    max_tokens: int
    overlap_tokens: int
    model: str
    precision: VectorPrecision = "f32"


@dataclass(frozen=True, slots=True)
class IndexVersion:
    """One built (or building) index of a collection. ``index_id`` keys its chunks, keyword table and vector
    graph; version 1's is the collection's own id."""

    index_id: str
    collection_id: str
    version: int
    config: IndexConfig
    state: IndexState
    built: int
    total: int
    error: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class IndexRoute:
    """Where a collection's queries go: the active version, optionally a canary taking ``canary_share`` of
    them, and the version a rollback returns to."""

    active: IndexVersion
    canary: IndexVersion | None = None
    canary_share: float = 0.0
    previous: IndexVersion | None = None


@dataclass(frozen=True, slots=True)
class DocumentSource:
    """A ready document as a new index version needs it: its parsed form (None for documents stored before
    parsed forms were kept) and the content hash a rebuilt chunk set must still match when written."""

    document_id: str
    title: str | None
    content_hash: str
    parsed: ParsedDocument | None


# --- jobs ------------------------------------------------------------------------------------------------


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIAL = "partial"


@dataclass(frozen=True, slots=True)
class JobError:
    document_id: str | None
    filename: str | None
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class JobProgress:
    stage: str
    done: int
    total: int


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    kind: str
    status: JobStatus
    progress: JobProgress
    errors: tuple[JobError, ...]
    document_ids: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    tenant: str = DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """An outbox row: items of a job to publish as one broker message. Small jobs get a higher priority."""

    id: int
    job_id: str
    seqs: tuple[int, ...]
    priority: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A job item whose message exhausted its retries; it keeps its input and can be requeued."""

    job_id: str
    seq: int
    document_id: str
    error: JobError
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DocumentInput:
    """One document as a client submitted it: inline text or file bytes, staged until a worker parses it."""

    collection: str
    external_id: str | None = None
    title: str | None = None
    text: str | None = None
    filename: str | None = None
    content: bytes | None = None
    metadata: Metadata = field(default_factory=dict)
    tenant: str = DEFAULT_TENANT
    acl: Acl | None = None


# --- retrieval and answers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """Metadata conditions, all of which must hold: a scalar means equality, a list means ``in``; and the
    caller's ``access``: only documents whose ACL admits it (None or unrestricted: no ACL condition). Every
    backend applies both inside its keyword and vector search (pre-filtering)."""

    conditions: tuple[tuple[str, MetadataValue], ...] = ()
    access: Access | None = None

    @classmethod
    def from_mapping(cls, mapping: Metadata | None) -> SearchFilters:
        """Raises ``InvalidRequestError`` for a key that is not 1-64 letters, digits, ``_`` or ``-``, or an
        empty list."""
        for key, value in (mapping or {}).items():
            if not _FILTER_KEY.match(key):
                raise InvalidRequestError(f"filter key {key!r} must be 1-64 letters, digits, '_' or '-'")
            if isinstance(value, list) and not value:
                raise InvalidRequestError(f"filter {key!r} has an empty list")
        return cls(tuple(sorted((mapping or {}).items())))

    @property
    def acl_restricted(self) -> bool:
        return self.access is not None and not self.access.unrestricted

    def with_access(self, access: Access | None) -> SearchFilters:
        return SearchFilters(self.conditions, access)

    def __bool__(self) -> bool:
        return bool(self.conditions) or self.acl_restricted


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A chunk that matched a query, with what a citation needs. ``score`` is higher-is-better."""

    chunk_id: int
    document_id: str
    external_id: str | None
    title: str | None
    source: str | None
    text: str
    score: float
    metadata: Metadata
    section: str | None = None
    page: int | None = None


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: tuple[SearchHit, ...]
    mode: SearchMode
    degraded: bool = False
    index_version: int | None = None


@dataclass(frozen=True, slots=True)
class Citation:
    index: int
    chunk_id: int
    document_id: str
    external_id: str | None
    source: str | None
    title: str | None
    quote: str

    @classmethod
    def of(cls, hit: SearchHit, index: int, quote: str) -> Citation:
        """Citation ``[index]`` of ``hit``, quoting ``quote`` from it."""
        return cls(
            index=index,
            chunk_id=hit.chunk_id,
            document_id=hit.document_id,
            external_id=hit.external_id,
            source=hit.source,
            title=hit.title,
            quote=quote,
        )


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    abstained: bool
    citations: tuple[Citation, ...]
    generator: str


@dataclass(frozen=True, slots=True)
class AnswerDelta:
    """A piece of answer text as it is produced; a stream of these ends with the complete ``Answer``."""

    text: str
