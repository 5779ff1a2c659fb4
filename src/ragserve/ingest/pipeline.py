"""The ingestion pipeline: parse → chunk → embed (through the cache) → write, one transaction per document.

A batch of staged documents is parsed and chunked one by one (a bad file fails alone), then every chunk
whose text was never embedded is embedded in model-sized batches across the whole batch of documents, then
each document is written in its own transaction and its chunk changes applied to the vector index.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ragserve.domain import ChunkDraft, DocumentInput, JobError, NewChunk, ParsedDocument
from ragserve.embedding.protocol import Embedder
from ragserve.errors import NotFoundError, RagserveError
from ragserve.ingest.chunking import chunk_document
from ragserve.ingest.loaders import file_extension, load_file, parse_text
from ragserve.observability.metrics import EMBEDDING_CACHE, INGEST_CHUNKS, INGEST_DOCUMENTS, timed
from ragserve.settings import ChunkingSettings
from ragserve.stores.protocol import DocumentStore, EmbeddingCache, JobStore, StagedItem, VectorIndex

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Prepared:
    item: StagedItem
    title: str | None
    content_hash: str
    drafts: list[ChunkDraft]
    hashes: list[str]


def parse_input(item: DocumentInput) -> ParsedDocument:
    """The parsed form of a submitted document. Raises ``DocumentParseError``/``UnsupportedMediaTypeError``."""
    if item.content is not None:
        return load_file(item.content, item.filename or "upload.txt")
    is_markdown = file_extension(item.filename or "") in (".md", ".markdown")
    return parse_text(item.text or "", markdown=is_markdown)


def input_hash(item: DocumentInput) -> str:
    digest = hashlib.sha256()
    digest.update((item.title or "").encode())
    digest.update(b"\0")
    digest.update(item.content if item.content is not None else (item.text or "").encode())
    return digest.hexdigest()


def embed_text(title: str | None, section: str | None, text: str) -> str:
    """What the model sees for a chunk: the document title and section heading give it context."""
    return "\n".join(part for part in (title, section, text) if part)


class IngestPipeline:
    """Turns claimed job items into stored, indexed documents. Synchronous: runs in a worker thread."""

    def __init__(
        self,
        jobs: JobStore,
        documents: DocumentStore,
        cache: EmbeddingCache,
        index: VectorIndex,
        embedder: Embedder,
        chunking: ChunkingSettings,
    ) -> None:
        self._jobs = jobs
        self._documents = documents
        self._cache = cache
        self._index = index
        self._embedder = embedder
        self._chunking = chunking

    def process(self, items: Sequence[StagedItem]) -> None:
        for job_id in {item.job_id for item in items}:
            self._jobs.set_stage(job_id, "parsing")
        prepared = [p for p in (self._prepare(item) for item in items) if p is not None]
        for job_id in {p.item.job_id for p in prepared}:
            self._jobs.set_stage(job_id, "embedding")
        try:
            vectors = self._vectors([h for p in prepared for h in p.hashes], prepared)
        except RagserveError as exc:
            for p in prepared:
                self._fail(p.item, exc.code, exc.message)
            return
        for job_id in {p.item.job_id for p in prepared}:
            self._jobs.set_stage(job_id, "indexing")
        for p in prepared:
            self._write(p, vectors)

    def _prepare(self, item: StagedItem) -> _Prepared | None:
        try:
            with timed("parse"):
                parsed = parse_input(item.input)
            with timed("chunk"):
                drafts = chunk_document(
                    parsed,
                    self._embedder.count_tokens,
                    max_tokens=self._chunking.max_tokens,
                    overlap_tokens=self._chunking.overlap_tokens,
                )
        except RagserveError as exc:
            self._fail(item, exc.code, exc.message)
            return None
        except Exception as exc:  # a parser library's own bug must fail one file, not the worker
            logger.exception("unexpected error parsing document %s", item.document_id)
            self._fail(item, "parse_error", f"could not parse the document: {type(exc).__name__}")
            return None
        if not drafts:
            self._fail(item, "empty_document", "the document contains no text")
            return None
        title = item.input.title or parsed.title or item.input.filename
        hashes = [
            hashlib.sha256(embed_text(title, " > ".join(d.section_path) or None, d.text).encode()).hexdigest()
            for d in drafts
        ]
        return _Prepared(item, title, input_hash(item.input), drafts, hashes)

    def _vectors(self, hashes: list[str], prepared: list[_Prepared]) -> dict[str, bytes]:
        model = self._embedder.model_id
        keys = sorted({f"{model}:{h}" for h in hashes})
        found = self._cache.get_vectors(keys)
        EMBEDDING_CACHE.labels(result="hit").inc(len(found))
        texts: dict[str, str] = {}
        for p in prepared:
            for draft, h in zip(p.drafts, p.hashes, strict=True):
                key = f"{model}:{h}"
                if key not in found and key not in texts:
                    texts[key] = embed_text(p.title, " > ".join(draft.section_path) or None, draft.text)
        EMBEDDING_CACHE.labels(result="miss").inc(len(texts))
        if texts:
            with timed("embed"):
                matrix = self._embedder.embed(list(texts.values()), kind="document")
            fresh = [
                (key, np.ascontiguousarray(row, dtype="<f4").tobytes()) for key, row in zip(texts, matrix, strict=True)
            ]
            self._cache.put_vectors(fresh)
            found.update(fresh)
        return found

    def _write(self, p: _Prepared, vectors: dict[str, bytes]) -> None:
        model = self._embedder.model_id
        chunks = [
            NewChunk(
                ordinal=draft.ordinal,
                text=draft.text,
                section=" > ".join(draft.section_path) or None,
                page=draft.page,
                token_count=draft.token_count,
                content_hash=h,
                vector=vectors[f"{model}:{h}"],
            )
            for draft, h in zip(p.drafts, p.hashes, strict=True)
        ]
        try:
            with timed("index"):
                changes = self._documents.write_document(p.item, p.title, p.content_hash, chunks)
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
        self._index.delete(p.item.collection_id, changes.removed)
        if changes.added:
            matrix = np.stack([np.frombuffer(v, dtype="<f4") for v in changes.added_vectors])
            self._index.upsert(p.item.collection_id, changes.added, matrix)
        INGEST_DOCUMENTS.labels(outcome="succeeded").inc()
        INGEST_CHUNKS.inc(len(changes.added))

    def _fail(self, item: StagedItem, code: str, message: str) -> None:
        INGEST_DOCUMENTS.labels(outcome="failed").inc()
        self._jobs.fail_item(item, JobError(item.document_id, item.input.filename, code, message))
