"""Storage seams. The embedded backend implements all of them in SQLite (plus an HNSW file per collection);
a server backend (PostgreSQL) implements the same Protocols and passes the same contract tests.

The document store is the source of truth; the vector index is derived data, rebuilt from it when stale.
Every method is synchronous: services call them from worker threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ragserve.domain import (
    DEFAULT_TENANT,
    UNRESTRICTED,
    Access,
    Acl,
    ApiKey,
    Chunk,
    Collection,
    CollectionSummary,
    DeadLetter,
    Document,
    DocumentInput,
    DocumentSource,
    IndexConfig,
    IndexRoute,
    IndexState,
    IndexVersion,
    Job,
    JobError,
    NewChunk,
    ParsedDocument,
    QueueMessage,
    SearchFilters,
    SearchHit,
)

Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ChunkChanges:
    """What a document write did to the chunk table: chunks to add to / remove from the vector index.
    ``added_vectors[i]`` is the float32 vector of ``added[i]``."""

    added: tuple[int, ...]
    added_vectors: tuple[bytes, ...]
    removed: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StagedItem:
    """One document of a job, claimed by a worker."""

    job_id: str
    seq: int
    document_id: str
    collection_id: str
    input: DocumentInput


@dataclass(frozen=True, slots=True)
class DocumentFingerprint:
    """A stored document as source sync compares it with a file: its external id and the ``input_hash`` of
    what it was last ingested from (None until its first ingestion succeeds)."""

    document_id: str
    external_id: str
    content_hash: str | None


@dataclass(frozen=True, slots=True)
class DocumentWrite:
    """What ingestion writes for one document: its chunks for each live index version of its collection
    (index id → chunks, in document order) and its parsed form, kept for index versions built later."""

    title: str | None
    content_hash: str
    parsed: ParsedDocument
    chunks: Mapping[str, Sequence[NewChunk]]


class DocumentStore(Protocol):
    """Collections, documents and their chunks."""

    def ensure_collection(self, name: str, tenant: str = DEFAULT_TENANT) -> Collection:
        """The tenant's collection called ``name``, created if missing."""
        ...

    def get_collection(self, name: str, tenant: str = DEFAULT_TENANT) -> Collection:
        """The tenant's collection called ``name`` (names are unique within a tenant). Raises
        ``NotFoundError``, also for another tenant's collection."""
        ...

    def list_collections(self) -> list[Collection]:
        """Every tenant's collections (for the service's own upkeep, never for a caller)."""
        ...

    def summarize_collections(self, tenant: str = DEFAULT_TENANT) -> list[CollectionSummary]:
        """The tenant's collections, by name, with their document counts."""
        ...

    def get_document(self, document_id: str) -> Document:
        """Raises ``NotFoundError``. The caller checks ``Access.can_read``."""
        ...

    def list_documents(
        self, collection: str | None, limit: int, offset: int, access: Access = UNRESTRICTED
    ) -> tuple[list[Document], int]:
        """A page of the documents of ``access``'s tenant that its ACL admits (newest first), and their count."""
        ...

    def set_acl(self, document_id: str, acl: Acl | None) -> None:
        """Replace a document's ACL (None: readable by its whole tenant) at once, without touching its chunks.
        Raises ``NotFoundError``."""
        ...

    def tenant_chunk_count(self, tenant: str) -> int:
        """How many chunks the tenant's documents have (in their collections' active index versions)."""
        ...

    def has_restricted_documents(self, collection_id: str) -> bool:
        """Whether any document of the collection has an ACL that is not public."""
        ...

    def delete_document(self, document_id: str) -> dict[str, list[int]]:
        """Delete a document and its chunks in every index version; returns the removed chunk ids by index id.
        Raises ``NotFoundError``."""
        ...

    def document_fingerprints(self, collection_id: str, filters: SearchFilters) -> list[DocumentFingerprint]:
        """The collection's documents that have an external id and whose metadata satisfies ``filters``
        (pending ones included), by external id."""
        ...

    def write_document(self, item: StagedItem, write: DocumentWrite) -> dict[str, ChunkChanges]:
        """In one transaction: replace the document's chunks in every live index version (keeping unchanged
        ones), keep its parsed form, mark it ready and the job item done. Returns the changes by index id.
        Raises ``NotFoundError`` when the document was deleted meanwhile, ``IndexVersionsChangedError`` when
        ``write.chunks`` does not name exactly the collection's live index versions."""
        ...


class CollectionSettingsStore(Protocol):
    """Per-collection retrieval settings (``RetrievalOverrides`` fields, unset ones omitted)."""

    def get_retrieval_overrides(self, collection_id: str) -> dict[str, object]: ...

    def set_retrieval_overrides(self, collection_id: str, overrides: dict[str, object]) -> None:
        """Raises ``NotFoundError`` for an unknown collection."""
        ...


class IndexVersionStore(Protocol):
    """A collection's index versions and where its queries go. Version 1 is created with the collection."""

    def list_versions(self, collection_id: str) -> list[IndexVersion]: ...

    def live_versions(self, collection_id: str) -> list[IndexVersion]:
        """The versions ingestion keeps current: those building or ready."""
        ...

    def create_version(self, collection_id: str, config: IndexConfig, total: int) -> IndexVersion:
        """A new version in state ``building``, live from now on, with its empty keyword table."""
        ...

    def update_version(
        self, index_id: str, *, state: IndexState | None = None, built: int | None = None, error: str | None = None
    ) -> None: ...

    def index_route(self, collection_id: str) -> IndexRoute:
        """Read in one statement, so a query never sees half of a route change."""
        ...

    def set_route(
        self, collection_id: str, active: str, canary: str | None, canary_share: float, previous: str | None
    ) -> None:
        """Switch the route in one statement (atomic for every later ``index_route``)."""
        ...

    def delete_version(self, index_id: str) -> list[int]:
        """Drop a version that is not routed to, with its chunks; returns the removed chunk ids."""
        ...

    def get_golden_set(self, collection_id: str) -> dict[str, Any] | None:
        """The queries and graded judgements a promotion is evaluated on, if the collection has them."""
        ...

    def set_golden_set(self, collection_id: str, golden: dict[str, object]) -> None: ...


class RebuildSource(Protocol):
    """What building a new index version reads and writes."""

    def ready_document_count(self, collection_id: str) -> int: ...

    def document_sources(self, collection_id: str, after: str | None, limit: int) -> list[DocumentSource]:
        """Up to ``limit`` ready documents of the collection with ids after ``after``, by id."""
        ...

    def write_version_chunks(
        self, index_id: str, source: DocumentSource, chunks: Sequence[NewChunk]
    ) -> ChunkChanges | None:
        """Replace the document's chunks in one index version, unless it changed or went away since
        ``source`` was read (then None: the ingestion that changed it wrote that version too)."""
        ...


class ChunkStore(Protocol):
    """Reading chunks for retrieval."""

    def get_chunks(self, document_id: str) -> list[Chunk]: ...

    def hits(self, scored: Sequence[tuple[int, float]], access: Access | None = None) -> list[SearchHit]:
        """Search hits for ``(chunk_id, score)`` pairs, in the given order; unknown ids are skipped, and so are
        chunks outside ``access``'s tenant or not admitted by their document's ACL (the last gate before a
        caller sees text, however the ids were found)."""
        ...

    def chunk_ids(self, collection_id: str, filters: SearchFilters) -> list[int]:
        """Ids of the collection's chunks whose document metadata satisfies ``filters``."""
        ...

    def external_ids_of(self, chunk_ids: Sequence[int]) -> list[str]:
        """Documents' external ids (or ids) in order of their first chunk in ``chunk_ids`` (max-passage)."""
        ...

    def chunk_vectors(self, ids: Sequence[int]) -> Vectors:
        """The stored vectors of ``ids``, one row each, in the given order."""
        ...

    def chunk_documents(self, chunk_ids: Sequence[int]) -> dict[int, str]:
        """The document id of each of ``chunk_ids`` that exists (for document-level fusion)."""
        ...


class KeywordIndex(Protocol):
    """BM25 keyword search over chunk title and text."""

    def keyword_search(
        self, collection_id: str, terms: Sequence[str], k: int, filters: SearchFilters
    ) -> list[tuple[int, float]]:
        """Up to ``k`` (chunk_id, score) pairs, best first, for analysed ``terms`` (any may match)."""
        ...

    def term_chunk_counts(self, collection_id: str, terms: Sequence[str]) -> dict[str, int]:
        """How many chunks of the index contain each of ``terms`` (absent terms are left out): what a keyword
        search for them must read."""
        ...


class EmbeddingCache(Protocol):
    """Vectors keyed by model and text hash, so unchanged text is never embedded twice."""

    def get_vectors(self, keys: Sequence[str]) -> dict[str, bytes]: ...

    def put_vectors(self, items: Sequence[tuple[str, bytes]]) -> None: ...


class JobStore(Protocol):
    """Ingestion jobs and the documents staged in them."""

    def create_job(self, inputs: Sequence[DocumentInput], idempotency_key: str | None, request_hash: str | None) -> Job:
        """Stage the inputs as pending documents of a new queued job, in one transaction. With an
        idempotency key seen before, return that job (``ConflictError`` if the request differs)."""
        ...

    def get_job(self, job_id: str) -> Job:
        """Raises ``NotFoundError``."""
        ...

    def claim_items(self, limit: int, max_bytes: int | None = None) -> list[StagedItem]:
        """Mark up to ``limit`` pending items running and return them, oldest job first. With ``max_bytes``,
        items are taken while the staged payloads taken before each sum under it (so at least one)."""
        ...

    def fail_item(self, item: StagedItem, error: JobError) -> None:
        """Record a failed item; a document that was never ready is removed, an existing one kept."""
        ...

    def set_stage(self, job_id: str, stage: str) -> None: ...

    def release_items(self, items: Sequence[StagedItem]) -> None:
        """Put claimed items back to pending, to be retried."""
        ...

    def requeue_running(self) -> int:
        """Put items left running by a dead process back to pending; returns how many."""
        ...

    def pending_count(self) -> int:
        """Items pending or running: the work not yet done."""
        ...


class LeasedJobStore(JobStore, Protocol):
    """Jobs processed by workers in other processes, through a message broker.

    ``create_job`` also writes outbox rows (one per message) in its transaction; a relay publishes them, so a
    committed job is always published, perhaps twice, never lost. A worker claims a message's items under a
    lease it keeps alive with heartbeats; a dead worker's lease expires and its items can be claimed again.
    Items already done are never claimed again, so a redelivered message duplicates nothing."""

    def claim_leased(
        self, job_id: str, seqs: Sequence[int], owner: str, lease_seconds: float
    ) -> tuple[list[StagedItem], int]:
        """Lease the message's items that are pending or whose lease expired; returns them and how many are
        still leased by a live worker (the message should be retried later)."""
        ...

    def extend_lease(self, owner: str, items: Sequence[StagedItem], lease_seconds: float) -> None: ...

    def dead_letter(self, items: Sequence[StagedItem], error: JobError) -> None:
        """Park items whose retries are exhausted, keeping their input for a requeue."""
        ...

    def list_dead(self, limit: int) -> list[DeadLetter]: ...

    def requeue_dead(self, job_id: str | None) -> int:
        """Put dead items (of one job, or all) back to pending with new outbox rows; returns how many."""
        ...

    def unpublished(self, limit: int, republish_after_seconds: float) -> list[QueueMessage]:
        """Outbox rows never published, or published that long ago while their items still wait."""
        ...

    def mark_published(self, ids: Sequence[int]) -> None: ...

    def expired_leases(self) -> int:
        """Items left running under an expired lease (a worker died and no message retried them yet)."""
        ...


class ApiKeyStore(Protocol):
    """API keys by id, with the keyed hash of the key (never the key)."""

    def create_key(self, key: ApiKey, key_hash: str) -> None: ...

    def get_key(self, key_id: str) -> tuple[ApiKey, str] | None: ...

    def list_keys(self, tenant: str | None) -> list[ApiKey]:
        """Every key (of one tenant), newest first."""
        ...

    def revoke_key(self, key_id: str, tenant: str | None) -> ApiKey:
        """Raises ``NotFoundError`` (also for another tenant's key)."""
        ...


class VectorIndex(Protocol):
    """Approximate nearest neighbours per collection, inner product over unit vectors (higher is closer)."""

    def upsert(self, collection_id: str, ids: Sequence[int], vectors: Vectors) -> None: ...

    def delete(self, collection_id: str, ids: Sequence[int]) -> None: ...

    def drop(self, collection_id: str) -> None:
        """Forget a whole graph (an index version that was deleted)."""
        ...

    def search(
        self, collection_id: str, query: Vectors, k: int, allowed_ids: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        """Up to ``k`` (id, similarity) pairs, best first; with ``allowed_ids`` only those are candidates."""
        ...

    def search_filtered(
        self, collection_id: str, query: Vectors, k: int, filters: SearchFilters, chunks: ChunkStore
    ) -> list[tuple[int, float]]:
        """``search`` among the chunks whose document metadata satisfies ``filters`` (pre-filtering: as many
        hits as chunks pass, up to ``k``). An index beside the chunks (pgvector) filters in its own query;
        others take the allowed ids from ``chunks.chunk_ids``."""
        ...

    def flush(self) -> None:
        """Persist whatever changed since the last flush."""
        ...
