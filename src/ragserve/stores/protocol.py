"""Storage seams. The embedded backend implements all of them in SQLite (plus an HNSW file per collection);
a server backend (PostgreSQL) implements the same Protocols and passes the same contract tests.

The document store is the source of truth; the vector index is derived data, rebuilt from it when stale.
Every method is synchronous: services call them from worker threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ragserve.domain import (
    Chunk,
    Collection,
    CollectionSummary,
    Document,
    DocumentInput,
    Job,
    JobError,
    NewChunk,
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


class DocumentStore(Protocol):
    """Collections, documents and their chunks."""

    def ensure_collection(self, name: str) -> Collection:
        """The collection called ``name``, created if missing."""
        ...

    def get_collection(self, name: str) -> Collection:
        """Raises ``NotFoundError``."""
        ...

    def list_collections(self) -> list[Collection]: ...

    def summarize_collections(self) -> list[CollectionSummary]:
        """Every collection, by name, with its document count."""
        ...

    def get_document(self, document_id: str) -> Document:
        """Raises ``NotFoundError``."""
        ...

    def list_documents(self, collection: str | None, limit: int, offset: int) -> tuple[list[Document], int]:
        """A page of documents (newest first) and the total count."""
        ...

    def delete_document(self, document_id: str) -> tuple[str, list[int]]:
        """Delete a document and its chunks; returns its collection id and the removed chunk ids.
        Raises ``NotFoundError``."""
        ...

    def write_document(
        self, item: StagedItem, title: str | None, content_hash: str, chunks: Sequence[NewChunk]
    ) -> ChunkChanges:
        """In one transaction: replace the document's chunks (keeping unchanged ones), mark it ready and the
        job item done. Raises ``NotFoundError`` when the document was deleted meanwhile."""
        ...


class CollectionSettingsStore(Protocol):
    """Per-collection retrieval settings (``RetrievalOverrides`` fields, unset ones omitted)."""

    def get_retrieval_overrides(self, collection_id: str) -> dict[str, object]: ...

    def set_retrieval_overrides(self, name: str, overrides: dict[str, object]) -> None:
        """Raises ``NotFoundError`` for an unknown collection."""
        ...


class ChunkStore(Protocol):
    """Reading chunks for retrieval."""

    def get_chunks(self, document_id: str) -> list[Chunk]: ...

    def hits(self, scored: Sequence[tuple[int, float]]) -> list[SearchHit]:
        """Search hits for ``(chunk_id, score)`` pairs, in the given order; unknown ids are skipped."""
        ...

    def chunk_ids(self, collection_id: str, filters: SearchFilters) -> list[int]:
        """Ids of the collection's chunks whose document metadata satisfies ``filters``."""
        ...

    def chunk_vectors(self, ids: Sequence[int]) -> Vectors:
        """The stored vectors of ``ids``, one row each, in the given order."""
        ...


class KeywordIndex(Protocol):
    """BM25 keyword search over chunk title and text."""

    def keyword_search(
        self, collection_id: str, terms: Sequence[str], k: int, filters: SearchFilters
    ) -> list[tuple[int, float]]:
        """Up to ``k`` (chunk_id, score) pairs, best first, for analysed ``terms`` (any may match)."""
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

    def claim_items(self, limit: int) -> list[StagedItem]:
        """Mark up to ``limit`` pending items running and return them, oldest job first."""
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


class VectorIndex(Protocol):
    """Approximate nearest neighbours per collection, inner product over unit vectors (higher is closer)."""

    def upsert(self, collection_id: str, ids: Sequence[int], vectors: Vectors) -> None: ...

    def delete(self, collection_id: str, ids: Sequence[int]) -> None: ...

    def search(
        self, collection_id: str, query: Vectors, k: int, allowed_ids: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        """Up to ``k`` (id, similarity) pairs, best first; with ``allowed_ids`` only those are candidates."""
        ...

    def flush(self) -> None:
        """Persist whatever changed since the last flush."""
        ...
