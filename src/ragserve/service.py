"""The application service: builds the configured parts once and offers the operations the API and CLI share.

``RagService.open(settings)`` wires the configured parts: the stores of ``store.backend`` (by default SQLite
and HNSW files; PostgreSQL with pgvector, see ``stores/factory.py``), the ONNX model, the task queue, the
generator; ``start()``/``close()`` bracket its life. Routes and CLI commands each
call one method here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

import anyio.to_thread
from opentelemetry.trace import Span, use_span

from ragserve.cache.answering import CachedAnswers
from ragserve.cache.answers import AnswerKey
from ragserve.cache.factory import build_caches
from ragserve.domain import (
    ANONYMOUS,
    Acl,
    Answer,
    AnswerDelta,
    Chunk,
    CollectionSummary,
    DeadLetter,
    Document,
    DocumentInput,
    IndexConfig,
    Job,
    Metadata,
    Principal,
    SearchFilters,
    SearchResult,
    VectorPrecision,
)
from ragserve.embedding.batching import MicroBatcher
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.embedding.protocol import Embedder
from ragserve.embedding.reuse import ReusingEmbedder
from ragserve.errors import NotFoundError
from ragserve.index_lifecycle import IndexLifecycle, refuse_other_models
from ragserve.ingest.admission import check_inputs, check_replaceable, hash_request
from ragserve.ingest.isolation import build_parser
from ragserve.ingest.pipeline import IngestPipeline
from ragserve.ingest.reindex import IndexBuilder
from ragserve.ingest.sync import SourceFile, SyncReport, prepare_sync
from ragserve.llm.factory import build_generation
from ragserve.llm.gateway import LLMGateway
from ragserve.llm.judge import GroundednessJudge
from ragserve.llm.metering import TokenMeter, metered, metering
from ragserve.llm.protocol import AnswerGenerator
from ragserve.observability.metrics import ANSWERS, timed
from ragserve.observability.tracing import open_span, start_span
from ragserve.retrieval.rerank import build_reranker
from ragserve.retrieval.search import Retriever, SearchQuery, validate_query
from ragserve.retrieval.state import CollectionState
from ragserve.settings import RetrievalOverrides, RetrievalSettings, Settings
from ragserve.stores.factory import StoreSet, claim_data_dir, open_stores
from ragserve.taskqueue.factory import build_task_queue

logger = logging.getLogger(__name__)


def index_precisions(settings: Settings) -> tuple[VectorPrecision, ...]:
    """The precisions index versions may have on this backend, the one new versions get by default first.
    PostgreSQL keeps one pgvector index for all chunks, so its versions have that index's precision."""
    if settings.store.backend == "postgres":
        return (settings.store.vector_precision,)
    default = settings.vector_index.precision
    return (default, *(p for p in ("f32", "f16", "int8", "binary") if p != default))


def _micro_batcher(settings: Settings, embedder: Embedder) -> MicroBatcher | None:
    """The shared embedding micro-batcher around ``embedder`` when ``embedding.micro_batching`` is on."""
    config = settings.embedding
    if not config.micro_batching:
        return None
    return MicroBatcher(
        embedder,
        window_ms=config.batch_window_ms,
        max_batch=config.max_batch,
        max_document_batch=config.max_document_batch,
    )


@dataclass(frozen=True, slots=True)
class Readiness:
    database: bool
    index: bool
    model: bool

    @property
    def is_ready(self) -> bool:
        return self.database and self.index and self.model


class RagService:
    """Everything a running ragserve needs, built from one ``Settings``."""

    def __init__(
        self,
        settings: Settings,
        stores: StoreSet,
        embedder: Embedder,
        generator: AnswerGenerator,
    ) -> None:
        self.settings = settings
        self.stores = stores
        self.embedder = embedder
        self.store = stores.store
        self.versions = stores.versions
        self.jobs = stores.jobs
        self.index = stores.index
        self.caches = build_caches(settings, stores.is_shared)
        embedding_cache = self.caches.embeddings or self.store
        self.parser = build_parser(settings.parsing)  # parser processes start on the first file that needs one
        self.pipeline = IngestPipeline(
            self.jobs,
            self.store,
            self.versions,
            embedding_cache,
            self.index,
            embedder,
            on_documents_changed=self._documents_changed,
            parser=self.parser,
        )
        self.queue = build_task_queue(settings, self.jobs, self.pipeline, shared_store=stores.is_shared, consumers=None)
        self.state = CollectionState(
            self.store, self.store, self.versions, self.caches.invalidation, settings.cache.state_ttl_seconds
        )
        self.answer_cache = CachedAnswers(self.caches.answers, self.state, embedder, settings)
        # Retrieval reuses the question's vector when the answer cache computed it (``question_vector``).
        query_embedder = ReusingEmbedder(embedder)
        self.reranker = build_reranker(settings.reranker)
        self.retriever = Retriever(
            self.store,
            self.state,
            self.index,
            query_embedder,
            settings.retrieval,
            settings.default_collection,
            self.reranker,
        )
        builder = IndexBuilder(
            self.store, self.versions, embedding_cache, self.index, embedder, settings.index.build_batch_documents
        )
        self.lifecycle = IndexLifecycle(
            self.store,
            self.store,
            self.versions,
            self.index,
            builder,
            self.retriever,
            self.state,
            embedder.model_id,
            settings.index,
            precisions=index_precisions(settings),
        )
        self.generator = generator
        self.llm: LLMGateway | None = None  # the LLM gateway behind ``generator``, if providers are configured
        self.judge = GroundednessJudge(settings.observability.judge_sample_rate)
        self._flusher: asyncio.Task[None] | None = None
        self._index_ready = False
        self._batcher: MicroBatcher | None = None  # built by open(), closed with the service; never its inner

    @classmethod
    def open(cls, settings: Settings, embedder: Embedder | None = None) -> RagService:
        """Build the configured backends (``embedder`` may be shared, e.g. by tests). Raises
        ``DataDirLockedError`` if another process uses the data dir (sqlite), ``StoreError`` if the database
        cannot be reached or migrated (postgres)."""
        claim = claim_data_dir(settings)
        try:
            embedder = embedder or OnnxEmbedder(
                cache_dir=settings.model_cache_dir,
                max_seq_length=settings.embedding.max_seq_length,
                batch_size=settings.embedding.batch_size,
                intra_op_threads=settings.embedding.threads or None,
                allow_spinning=settings.embedding.allow_spinning,
                precision=settings.embedding.precision,
            )
            # New collections start with index version 1 under the service's chunking and model.
            config = IndexConfig(
                settings.chunking.max_tokens,
                settings.chunking.overlap_tokens,
                embedder.model_id,
                index_precisions(settings)[0],
            )
            stores = open_stores(settings, config, embedder.dimension, claim)
        except BaseException:
            if claim is not None:
                claim.close()
            raise
        try:
            refuse_other_models(stores.store, stores.versions, embedder.model_id)
        except BaseException:
            stores.close()
            raise
        batcher = _micro_batcher(settings, embedder)
        embedder = batcher or embedder
        try:
            generation = build_generation(settings, ReusingEmbedder(embedder))
        except BaseException:
            if batcher is not None:
                batcher.close()
            stores.close()
            raise
        service = cls(settings, stores, embedder, generation.generator)
        service._batcher = batcher
        service.llm = generation.gateway
        service.judge = GroundednessJudge(settings.observability.judge_sample_rate, generation.gateway)
        return service

    # --- life cycle -------------------------------------------------------------------------------------

    async def start(self, run_jobs: bool = True) -> None:
        """Catch the vector index up with the database, then start the job runner and the index saver."""
        await anyio.to_thread.run_sync(self.stores.catch_up)
        self._index_ready = True
        if run_jobs:
            await self.queue.start()
            await self.lifecycle.start()
        self._flusher = asyncio.create_task(self._flush_periodically(), name="index-flusher")

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.vector_index.save_interval_seconds)
            await anyio.to_thread.run_sync(self.index.flush)

    async def close(self) -> None:
        await self.queue.stop()
        await self.lifecycle.close()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await anyio.to_thread.run_sync(self.index.flush)
        self.retriever.close()
        if self.reranker is not None:
            self.reranker.close()
        await self.judge.aclose()
        if self.llm is not None:
            await self.llm.aclose()
        if self._batcher is not None:
            await anyio.to_thread.run_sync(self._batcher.close)
        self.caches.close()
        await anyio.to_thread.run_sync(self.parser.close)
        self.stores.close()

    def readiness(self) -> Readiness:
        return Readiness(
            database=self.stores.is_reachable(), index=self._index_ready, model=self.embedder.dimension > 0
        )

    # --- ingestion ----------------------------------------------------------------------------------------

    def check_inputs(self, inputs: Sequence[DocumentInput]) -> None:
        """Reject a request before anything is stored. Raises ``PayloadTooLargeError``,
        ``UnsupportedMediaTypeError``."""
        check_inputs(inputs, self.settings.limits)

    async def submit(
        self, inputs: Sequence[DocumentInput], idempotency_key: str | None = None, principal: Principal = ANONYMOUS
    ) -> Job:
        """Validate and stage documents as one job of the caller's tenant (every input is put in that tenant's
        collections); the runner ingests them in the background."""
        self.check_inputs(inputs)
        inputs = [replace(item, tenant=principal.tenant) for item in inputs]
        await anyio.to_thread.run_sync(check_replaceable, self.store, inputs, principal)
        request_hash = hash_request(inputs) if idempotency_key else None
        # Idempotency keys are the caller's own: another tenant's equal key names another request.
        scoped_key = None if idempotency_key is None else f"{principal.tenant}\x00{idempotency_key}"
        job = await anyio.to_thread.run_sync(self.jobs.create_job, inputs, scoped_key, request_hash)
        self.queue.notify()
        return job

    async def get_job(self, job_id: str, principal: Principal = ANONYMOUS) -> Job:
        """Raises ``NotFoundError``, also for another tenant's job."""
        job = await anyio.to_thread.run_sync(self.jobs.get_job, job_id)
        if job.tenant != principal.tenant:
            raise NotFoundError(f"job {job_id!r} not found")
        return job

    async def dead_letters(self, limit: int, principal: Principal = ANONYMOUS) -> list[DeadLetter]:
        """The dead-lettered items of the caller's tenant's jobs."""
        dead = await anyio.to_thread.run_sync(self.jobs.list_dead, limit)
        tenants = {job_id: await self._job_tenant(job_id) for job_id in {d.job_id for d in dead}}
        return [d for d in dead if tenants[d.job_id] == principal.tenant]

    async def _job_tenant(self, job_id: str) -> str | None:
        with contextlib.suppress(NotFoundError):
            return (await anyio.to_thread.run_sync(self.jobs.get_job, job_id)).tenant
        return None

    async def requeue_dead(self, job_id: str | None, principal: Principal = ANONYMOUS) -> int:
        """Put the caller's tenant's dead-lettered items (of one job, or all) back in the queue; returns how
        many. Raises ``NotFoundError`` for another tenant's job."""
        if job_id is not None:
            job_ids = [(await self.get_job(job_id, principal)).id]
        else:
            dead = await self.dead_letters(1_000_000, principal)
            job_ids = sorted({d.job_id for d in dead})
        count = 0
        for one in job_ids:
            count += await anyio.to_thread.run_sync(self.jobs.requeue_dead, one)
        self.queue.notify()
        return count

    async def list_collections(self, principal: Principal = ANONYMOUS) -> list[CollectionSummary]:
        return await anyio.to_thread.run_sync(self.store.summarize_collections, principal.tenant)

    async def retrieval_settings(
        self, collection: str, principal: Principal = ANONYMOUS
    ) -> tuple[RetrievalOverrides, RetrievalSettings]:
        """A collection's own overrides and the settings its searches use. Raises ``NotFoundError``."""
        found = await anyio.to_thread.run_sync(self.store.get_collection, collection, principal.tenant)
        overrides = await anyio.to_thread.run_sync(self.store.get_retrieval_overrides, found.id)
        return RetrievalOverrides.model_validate(overrides), self.retriever.settings_for(found.id)

    async def set_retrieval_settings(
        self, collection: str, overrides: RetrievalOverrides, principal: Principal = ANONYMOUS
    ) -> None:
        """Replace a collection's overrides; searches use them from the next query on."""
        found = await anyio.to_thread.run_sync(self.store.get_collection, collection, principal.tenant)
        await anyio.to_thread.run_sync(
            self.store.set_retrieval_overrides, found.id, overrides.model_dump(exclude_none=True)
        )
        self.state.changed(found.id)

    async def _readable(self, document_id: str, principal: Principal) -> Document:
        """The document, if the caller may read it; ``NotFoundError`` otherwise (never "forbidden": that would
        tell the caller the document exists)."""
        document = await anyio.to_thread.run_sync(self.store.get_document, document_id)
        if not principal.access.can_read(document):
            raise NotFoundError(f"document {document_id!r} not found")
        return document

    async def get_document(self, document_id: str, principal: Principal = ANONYMOUS) -> tuple[Document, list[Chunk]]:
        document = await self._readable(document_id, principal)
        chunks = await anyio.to_thread.run_sync(self.store.get_chunks, document_id)
        return document, chunks

    async def list_documents(
        self, collection: str | None, limit: int, offset: int, principal: Principal = ANONYMOUS
    ) -> tuple[list[Document], int]:
        return await anyio.to_thread.run_sync(self.store.list_documents, collection, limit, offset, principal.access)

    async def set_acl(self, document_id: str, acl: Acl | None, principal: Principal = ANONYMOUS) -> Document:
        """Replace a document's ACL at once, without re-embedding; answers cached from it are dropped."""
        await self._readable(document_id, principal)
        await anyio.to_thread.run_sync(self.store.set_acl, document_id, acl)
        await anyio.to_thread.run_sync(self._documents_changed, [document_id])
        return await anyio.to_thread.run_sync(self.store.get_document, document_id)

    async def delete_document(self, document_id: str, principal: Principal = ANONYMOUS) -> None:
        await self._readable(document_id, principal)
        removed = await anyio.to_thread.run_sync(self.store.delete_document, document_id)
        for index_id, chunk_ids in removed.items():
            await anyio.to_thread.run_sync(self.index.delete, index_id, chunk_ids)
        await anyio.to_thread.run_sync(self._documents_changed, [document_id])

    def _documents_changed(self, document_ids: Sequence[str]) -> None:
        """Answers built from these documents are stale now (the pipeline calls this after each write)."""
        if self.caches.answers is not None:
            self.caches.answers.invalidate_documents(document_ids)

    async def sync(
        self,
        collection: str,
        source: str,
        files: Sequence[SourceFile],
        *,
        delete_missing: bool = True,
        dry_run: bool = False,
        principal: Principal = ANONYMOUS,
    ) -> SyncReport:
        """Apply a source's new and changed files (as request-sized jobs) and, with ``delete_missing``, delete
        the documents of files it no longer has (see ``ingest/sync.py``). Raises ``PayloadTooLargeError`` or
        ``InvalidRequestError`` before anything changes."""
        prepared = await anyio.to_thread.run_sync(
            prepare_sync, self.store, collection, source, files, delete_missing, self.check_inputs, principal.tenant
        )
        if dry_run:
            return SyncReport(prepared.plan, prepared.skipped, ())
        paths, step = prepared.plan.to_submit, self.settings.limits.max_documents_per_request
        jobs = []
        for i in range(0, len(paths), step):
            inputs = await anyio.to_thread.run_sync(prepared.inputs, paths[i : i + step])
            jobs.append(await self.submit(inputs, principal=principal))
        for document in prepared.plan.to_delete:
            with contextlib.suppress(NotFoundError):  # deleted meanwhile: already what we want
                await self.delete_document(document.document_id, principal)
        return SyncReport(prepared.plan, prepared.skipped, tuple(jobs))

    # --- retrieval and answers ----------------------------------------------------------------------------

    def _validated(self, query: SearchQuery, principal: Principal) -> SearchQuery:
        text = validate_query(query.text, self.settings.limits.max_query_chars)
        filters = query.filters.with_access(principal.access)
        return SearchQuery(text, query.k, query.offset, query.collection, filters, query.mode)

    async def search(self, query: SearchQuery, principal: Principal = ANONYMOUS) -> SearchResult:
        """Only what the caller may read: its tenant's collection, documents its ACLs admit."""
        return await anyio.to_thread.run_sync(self.retriever.search, self._validated(query, principal))

    async def answer(
        self,
        question: str,
        k: int | None,
        collection: str | None,
        filters: Metadata | None,
        principal: Principal = ANONYMOUS,
    ) -> Answer:
        """``principal`` decides what may be retrieved (tenant, document ACLs), scopes the answer cache (by its
        permission set) and labels LLM token accounting."""
        with start_span("ragserve.answer"):
            key = await self.answer_cache.key(question, k, collection, filters, principal)
            cached = await self.answer_cache.lookup(key)
            if cached is not None:
                return cached
            hits = await self._contexts(question, k, collection, filters, principal)
            generations = await self.answer_cache.generations(key, hits)
            with timed("generate"), metering() as usage:
                answer = await self.generator.generate(question.strip(), hits.hits, principal=principal.label)
        ANSWERS.labels(generator=answer.generator, abstained=str(answer.abstained).lower()).inc()
        self.judge.submit(question, answer, hits.hits)
        await self.answer_cache.remember(key, answer, hits, generations, usage)
        return answer

    async def stream_answer(
        self,
        question: str,
        k: int | None,
        collection: str | None,
        filters: Metadata | None,
        principal: Principal = ANONYMOUS,
    ) -> AsyncIterator[AnswerDelta | Answer]:
        """Validates before the first item, so errors surface before a stream starts."""
        span = open_span("ragserve.answer")  # ended by the stream, which outlives this call
        try:
            with use_span(span, record_exception=True, set_status_on_exception=True):
                key = await self.answer_cache.key(question, k, collection, filters, principal)
                cached = await self.answer_cache.lookup(key)
                if cached is not None:
                    span.end()
                    return _replay(cached)
                hits = await self._contexts(question, k, collection, filters, principal)
                generations = await self.answer_cache.generations(key, hits)
        except BaseException:
            span.end()
            raise
        return self._stream(question.strip(), hits, span, key, generations, principal.label)

    async def _stream(
        self,
        question: str,
        hits: SearchResult,
        span: Span,
        key: AnswerKey | None,
        generations: list[int] | None,
        principal: str,
    ) -> AsyncIterator[AnswerDelta | Answer]:
        generate = open_span("ragserve.generate", parent=span)
        usage = TokenMeter()
        try:
            async for item in metered(self.generator.stream(question, hits.hits, principal=principal), usage):
                if isinstance(item, Answer):
                    ANSWERS.labels(generator=item.generator, abstained=str(item.abstained).lower()).inc()
                    self.judge.submit(question, item, hits.hits)
                    await self.answer_cache.remember(key, item, hits, generations, usage)
                yield item
        finally:
            generate.end()
            span.end()

    async def _contexts(
        self, question: str, k: int | None, collection: str | None, filters: Metadata | None, principal: Principal
    ) -> SearchResult:
        query = SearchQuery(
            question,
            k or self.settings.answer.k,
            0,
            collection,
            SearchFilters.from_mapping(filters),
            "hybrid",
        )
        return await self.search(query, principal)


async def _replay(answer: Answer) -> AsyncIterator[AnswerDelta | Answer]:
    """A cached answer as a stream: its text in one piece, then the answer."""
    yield AnswerDelta(answer.text)
    yield answer
