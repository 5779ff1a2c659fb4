"""The ingestion pipeline: parse → chunk → embed (through the cache) → write, one transaction per document.

A batch of staged documents is parsed and chunked one by one (a bad file fails alone), once per live index
version of its collection (usually one; two or three while a new version is built or canaried), then every
chunk whose text was never embedded is embedded in model-sized batches across the whole batch, then each
document is written in its own transaction, all versions at once, and the chunk changes are applied to the
vector index.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ragserve.domain import DocumentInput, IndexConfig, JobError, ParsedDocument
from ragserve.embedding.protocol import Embedder
from ragserve.errors import IndexVersionsChangedError, NotFoundError, RagserveError
from ragserve.ingest.chunk_plan import CachedEmbeddings, PlannedChunk, new_chunks, plan_chunks
from ragserve.ingest.isolation import DocumentParser, InProcessParser
from ragserve.ingest.loaders import file_extension, parse_text
from ragserve.observability.metrics import INGEST_CHUNKS, INGEST_DOCUMENTS, timed
from ragserve.settings import ParsingSettings
from ragserve.stores.protocol import (
    ChunkChanges,
    DocumentStore,
    DocumentWrite,
    EmbeddingCache,
    IndexVersionStore,
    JobStore,
    StagedItem,
    VectorIndex,
)

logger = logging.getLogger(__name__)
_DEFAULT_PARSER = InProcessParser(ParsingSettings())


@dataclass(frozen=True, slots=True)
class _Prepared:
    item: StagedItem
    title: str | None
    content_hash: str
    parsed: ParsedDocument
    chunks: dict[str, list[PlannedChunk]]  # index id → planned chunks


def parse_input(item: DocumentInput, parser: DocumentParser | None = None) -> ParsedDocument:
    """The parsed form of a submitted document: a file by ``parser`` (default: in this process, default
    limits), inline text here. Raises ``DocumentParseError`` (or a subclass for a limit) or
    ``UnsupportedMediaTypeError``."""
    if item.content is not None:
        return (parser or _DEFAULT_PARSER).parse(item.content, item.filename or "upload.txt")
    is_markdown = file_extension(item.filename or "") in (".md", ".markdown")
    return parse_text(item.text or "", markdown=is_markdown)


def input_hash(item: DocumentInput) -> str:
    digest = hashlib.sha256()
    digest.update((item.title or "").encode())
    digest.update(b"\0")
    digest.update(item.content if item.content is not None else (item.text or "").encode())
    return digest.hexdigest()


def apply_changes(index: VectorIndex, index_id: str, changes: ChunkChanges) -> None:
    """Bring one version's vector graph in line with a chunk write."""
    index.delete(index_id, changes.removed)
    if changes.added:
        matrix = np.stack([np.frombuffer(v, dtype="<f4") for v in changes.added_vectors])
        index.upsert(index_id, changes.added, matrix)


class IngestPipeline:
    """Turns claimed job items into stored, indexed documents. Synchronous: runs in a worker thread."""

    def __init__(
        self,
        jobs: JobStore,
        documents: DocumentStore,
        versions: IndexVersionStore,
        cache: EmbeddingCache,
        index: VectorIndex,
        embedder: Embedder,
        on_documents_changed: Callable[[Sequence[str]], None] | None = None,
        parser: DocumentParser | None = None,
    ) -> None:
        self._jobs = jobs
        self._parser = parser or _DEFAULT_PARSER
        self._on_changed = on_documents_changed
        self._documents = documents
        self._versions = versions
        self._index = index
        self._embedder = embedder
        self._embeddings = CachedEmbeddings(cache, embedder)

    def process(self, items: Sequence[StagedItem]) -> None:
        for job_id in {item.job_id for item in items}:
            self._jobs.set_stage(job_id, "parsing")
        configs: dict[str, dict[str, IndexConfig]] = {}
        prepared = [p for p in (self._prepare(item, configs) for item in items) if p is not None]
        for job_id in {p.item.job_id for p in prepared}:
            self._jobs.set_stage(job_id, "embedding")
        try:
            vectors = self._embeddings.vectors(c for p in prepared for planned in p.chunks.values() for c in planned)
        except RagserveError as exc:
            for p in prepared:
                self._fail(p.item, exc.code, exc.message)
            return
        for job_id in {p.item.job_id for p in prepared}:
            self._jobs.set_stage(job_id, "indexing")
        for p in prepared:
            self._write(p, vectors)

    def _live_configs(self, collection_id: str, cache: dict[str, dict[str, IndexConfig]]) -> dict[str, IndexConfig]:
        if collection_id not in cache:
            cache[collection_id] = {v.index_id: v.config for v in self._versions.live_versions(collection_id)}
        return cache[collection_id]

    def _prepare(self, item: StagedItem, configs: dict[str, dict[str, IndexConfig]]) -> _Prepared | None:
        try:
            with timed("parse"):
                parsed = parse_input(item.input, self._parser)
            title = item.input.title or parsed.title or item.input.filename
            chunks = self._plan(parsed, title, self._live_configs(item.collection_id, configs))
        except RagserveError as exc:
            self._fail(item, exc.code, exc.message)
            return None
        except Exception as exc:  # a parser library's own bug must fail one file, not the worker
            logger.exception("unexpected error parsing document %s", item.document_id)
            self._fail(item, "parse_error", f"could not parse the document: {type(exc).__name__}")
            return None
        if not chunks or not any(chunks.values()):
            self._fail(item, "empty_document", "the document contains no text")
            return None
        return _Prepared(item, title, input_hash(item.input), parsed, chunks)

    def _plan(
        self, parsed: ParsedDocument, title: str | None, configs: dict[str, IndexConfig]
    ) -> dict[str, list[PlannedChunk]]:
        """Chunks per index id; versions with the same configuration share one chunking."""
        by_config: dict[IndexConfig, list[PlannedChunk]] = {}
        for config in configs.values():
            if config not in by_config:
                by_config[config] = plan_chunks(parsed, title, config, self._embedder)
        return {index_id: by_config[config] for index_id, config in configs.items()}

    def _write(self, p: _Prepared, vectors: dict[str, bytes]) -> None:
        write = DocumentWrite(
            p.title, p.content_hash, p.parsed, {i: new_chunks(planned, vectors) for i, planned in p.chunks.items()}
        )
        try:
            with timed("index"):
                try:
                    changes = self._documents.write_document(p.item, write)
                except IndexVersionsChangedError:
                    # A version was created or dropped since this batch was chunked: chunk for the current set.
                    chunks = self._plan(p.parsed, p.title, self._live_configs(p.item.collection_id, {}))
                    more = self._embeddings.vectors(c for planned in chunks.values() for c in planned)
                    write = DocumentWrite(
                        p.title, p.content_hash, p.parsed, {i: new_chunks(c, more) for i, c in chunks.items()}
                    )
                    changes = self._documents.write_document(p.item, write)
        except NotFoundError:
            INGEST_DOCUMENTS.labels(outcome="deleted").inc()
            self._jobs.fail_item(
                p.item,
                JobError(
                    p.item.document_id,
                    p.item.input.filename,
                    "deleted",
                    "the document was deleted before it was ingested",
                ),
            )
            return
        for index_id, change in changes.items():
            apply_changes(self._index, index_id, change)
        if self._on_changed is not None:
            try:
                self._on_changed([p.item.document_id])
            except Exception:  # the document is written; a stale cache entry expires with its TTL
                logger.exception("could not signal the change of document %s", p.item.document_id)
        INGEST_DOCUMENTS.labels(outcome="succeeded").inc()
        INGEST_CHUNKS.inc(sum(len(c.added) for c in changes.values()))

    def _fail(self, item: StagedItem, code: str, message: str) -> None:
        INGEST_DOCUMENTS.labels(outcome="failed").inc()
        self._jobs.fail_item(item, JobError(item.document_id, item.input.filename, code, message))
