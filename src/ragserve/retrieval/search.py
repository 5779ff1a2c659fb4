"""Search: validate the query, run the keyword and dense halves, fuse, and load the hits."""

from __future__ import annotations

import contextvars
import logging
import random
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from ragserve.domain import DEFAULT_TENANT, IndexRoute, IndexVersion, SearchFilters, SearchMode, SearchResult
from ragserve.embedding.protocol import Embedder, Vectors
from ragserve.errors import EmptyQueryError, NotFoundError, PayloadTooLargeError, ServiceUnavailableError
from ragserve.observability.metrics import (
    INDEX_QUERIES,
    RETRIEVAL_DEGRADED,
    RETRIEVAL_QUERY_LENGTH,
    RETRIEVAL_TOP_SIMILARITY,
    timed,
)
from ragserve.retrieval.feedback import add_feedback, expansion_terms, within_budget
from ragserve.retrieval.fusion import Scored, document_fusion, rrf_fusion, zscore_fusion
from ragserve.retrieval.rerank import Reranker, RerankError, rerank
from ragserve.retrieval.state import CollectionState
from ragserve.settings import RetrievalOverrides, RetrievalSettings
from ragserve.stores.analyzer import analyze
from ragserve.stores.protocol import (
    ChunkStore,
    CollectionSettingsStore,
    DocumentStore,
    KeywordIndex,
    VectorIndex,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SearchStore(DocumentStore, ChunkStore, KeywordIndex, CollectionSettingsStore, Protocol):
    """What search needs of the store."""


@dataclass(frozen=True, slots=True)
class SearchQuery:
    text: str
    k: int = 10
    offset: int = 0
    collection: str | None = None
    filters: SearchFilters = field(default_factory=SearchFilters)
    mode: SearchMode | None = None


@dataclass(frozen=True, slots=True)
class Ranking:
    """Ranked (chunk_id, score) pairs; ``degraded`` when one half of a hybrid search was missing."""

    scored: Scored
    degraded: bool = False


def validate_query(text: str, max_chars: int) -> str:
    """The query stripped of surrounding space. Raises ``EmptyQueryError`` or ``PayloadTooLargeError``."""
    stripped = text.strip()
    if not stripped:
        raise EmptyQueryError("the query is empty")
    if len(text) > max_chars:
        raise PayloadTooLargeError(f"the query has {len(text)} characters; the limit is {max_chars}")
    return stripped


def choose_version(route: IndexRoute, draw: float | None = None) -> IndexVersion:
    """The canary for a ``canary_share`` of queries (by a uniform ``draw`` in [0, 1)), else the active one."""
    if route.canary is None or route.canary_share <= 0:
        return route.active
    return route.canary if (random.random() if draw is None else draw) < route.canary_share else route.active


class Retriever:
    """Hybrid retrieval over one collection. Synchronous and CPU-bound: call it from a worker thread."""

    def __init__(
        self,
        store: SearchStore,
        state: CollectionState,
        index: VectorIndex,
        embedder: Embedder,
        settings: RetrievalSettings,
        default_collection: str,
        reranker: Reranker | None = None,
    ) -> None:
        self._store = store
        self._reranker = reranker
        self.state = state
        self._index = index
        self._embedder = embedder
        self._settings = settings
        self._default_collection = default_collection
        # Each hybrid query runs its two halves here; sized for a few concurrent queries on a small machine.
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="retrieval")

    def settings_for(self, collection_id: str) -> RetrievalSettings:
        """The service-wide retrieval settings with the collection's own overrides applied."""
        overrides = self.state.overrides(collection_id)
        if not overrides:
            return self._settings
        return RetrievalOverrides.model_validate(overrides).apply(self._settings)

    def search(self, query: SearchQuery) -> SearchResult:
        name = query.collection or self._default_collection
        access = query.filters.access
        try:
            collection_id = self.state.collection_id(name, DEFAULT_TENANT if access is None else access.tenant)
        except NotFoundError:
            if query.collection is not None and query.collection != self._default_collection:
                raise
            return SearchResult(hits=(), mode=query.mode or self._settings.default_mode)
        # The route is read once: both halves and the hits of this query come from one index version.
        version = choose_version(self.state.route(collection_id))
        INDEX_QUERIES.labels(collection=name, version=str(version.version)).inc()
        mode: SearchMode = query.mode or self.settings_for(collection_id).default_mode
        RETRIEVAL_QUERY_LENGTH.observe(self._embedder.count_tokens([query.text])[0])
        ranking = self.rank(collection_id, version.index_id, query.text, query.k + query.offset, query.filters, mode)
        with timed("load"):
            # The store checks the caller's tenant and ACLs once more as it loads the text (a document whose
            # ACL changed while this query ran is dropped here).
            hits = self._store.hits(ranking.scored[query.offset : query.offset + query.k], access)
        return SearchResult(hits=tuple(hits), mode=mode, degraded=ranking.degraded, index_version=version.version)

    def rank(
        self, collection_id: str, index_id: str, text: str, n: int, filters: SearchFilters, mode: SearchMode
    ) -> Ranking:
        """The best ``n`` (chunk_id, score) pairs of one index version of the collection for ``text``.

        In hybrid mode the keyword half runs in a second thread while this one embeds the query. If one half
        fails or exceeds ``half_timeout_seconds``, the other half's ranking is returned with ``degraded``
        set; if the only requested half fails, its error propagates. A configured reranker then reorders the
        best ``rerank_candidates``; if it fails, the ranking stays as fused, with ``degraded`` set."""
        settings = self.settings_for(collection_id)
        filters = self._without_needless_acl(collection_id, filters)
        reranking = self._reranker is not None and settings.rerank_candidates > 0
        wanted = max(n, settings.rerank_candidates) if reranking else n
        ranking = self._ranked(index_id, text, wanted, filters, mode, settings)
        if reranking:
            ranking = self._reranked(text, ranking, filters, settings)
        return Ranking(ranking.scored[:n], ranking.degraded)

    def _ranked(
        self, index_id: str, text: str, n: int, filters: SearchFilters, mode: SearchMode, settings: RetrievalSettings
    ) -> Ranking:
        candidates = max(settings.candidates, n)
        if mode == "keyword":
            return Ranking(self._keyword(index_id, text, candidates, filters, settings, True)[:n])
        if mode == "dense":
            # Nothing fuses dense-only results, so the walk looks for n, not for the fusion's candidates: at
            # ``ef_search`` rather than at the candidate count, as the recall in bench/README.md is measured.
            return Ranking(self._dense(index_id, text, n, filters))
        # Each half runs in a copy of this context, so that its spans are children of this query's span.
        keyword_future = self._pool.submit(
            contextvars.copy_context().run,
            self._keyword,
            index_id,
            text,
            candidates,
            filters,
            settings,
            settings.feedback_from == "keyword",
        )
        dense_future = self._pool.submit(
            contextvars.copy_context().run, self._embed_and_search, index_id, text, candidates, filters
        )
        keyword = self._outcome(keyword_future, "keyword")
        dense_half = self._outcome(dense_future, "dense")
        if keyword is None and dense_half is None:
            raise ServiceUnavailableError("both the keyword and the dense search failed")
        if keyword is None or dense_half is None:
            return Ranking((keyword or (dense_half[1] if dense_half else []))[:n], degraded=True)
        vector, dense = dense_half
        document_of: dict[int, str] = {}
        with timed("fuse"):
            fused = self._fuse(dense, keyword, settings, document_of)
        # Feedback from the first fusion's best chunks, which both halves chose: the keyword half is extended
        # with an expansion search, the dense half searched again from a query moved towards those chunks'
        # vectors (Rocchio), and the two are fused again. The expansion search runs in a pool thread while this
        # one runs the Rocchio search.
        extended_future: Future[Scored] | None = None
        if settings.feedback_from == "fused" and settings.feedback_chunks > 0:
            extended_future = self._pool.submit(
                contextvars.copy_context().run,
                self._with_feedback,
                index_id,
                analyze(text),
                keyword,
                fused,
                candidates,
                filters,
                settings,
            )
        moved = self._with_dense_feedback(index_id, vector, dense, fused, candidates, filters, settings)
        extended = extended_future.result() if extended_future is not None else keyword
        if extended is not keyword or moved is not dense:
            with timed("refuse"):
                fused = self._fuse(moved, extended, settings, document_of)
        return Ranking(fused[:n])

    def _reranked(self, text: str, ranking: Ranking, filters: SearchFilters, settings: RetrievalSettings) -> Ranking:
        assert self._reranker is not None
        head = ranking.scored[: settings.rerank_candidates]
        if not head:
            return ranking
        with timed("rerank"):
            # Only chunks the caller may read are sent (``hits`` checks the ACL); the others keep their place.
            hits = self._store.hits(head, filters.access)
            texts = {hit.chunk_id: "\n".join(filter(None, (hit.title, hit.text))) for hit in hits}
            try:
                scores = self._reranker.score(text, [texts[cid] for cid, _ in head if cid in texts])
            except RerankError:
                logger.exception("reranking failed; answering with the fused ranking")
                RETRIEVAL_DEGRADED.labels(failed="rerank").inc()
                return Ranking(ranking.scored, degraded=True)
        return Ranking(rerank(ranking.scored, texts, scores), ranking.degraded)

    def _fuse(self, dense: Scored, keyword: Scored, settings: RetrievalSettings, document_of: dict[int, str]) -> Scored:
        """Fuse the halves; ``document_of`` caches the chunk -> document map across this query's fusions."""
        if settings.fusion == "rrf":
            return rrf_fusion([dense, keyword], settings.rrf_k)
        if settings.document_weight == 0:
            return zscore_fusion(dense, keyword, settings.hybrid_alpha)
        unknown = ({cid for cid, _ in dense} | {cid for cid, _ in keyword}) - document_of.keys()
        if unknown:
            document_of.update(self._store.chunk_documents(sorted(unknown)))
        return document_fusion(dense, keyword, document_of, settings.hybrid_alpha, settings.document_weight)

    def _without_needless_acl(self, collection_id: str, filters: SearchFilters) -> SearchFilters:
        """The filters without their ACL condition when no document of the collection is restricted: the
        unfiltered (faster) search then finds exactly the same chunks. ``hits`` still checks the ACLs."""
        if filters.acl_restricted and not self._store.has_restricted_documents(collection_id):
            return SearchFilters(filters.conditions)
        return filters

    def _outcome(self, future: Future[T], half: str) -> T | None:
        try:
            return future.result(timeout=self._settings.half_timeout_seconds)
        except FutureTimeoutError:
            logger.warning("%s search timed out; answering with the other half", half)
        except Exception:
            # Any failure of one half (a broken index file, a model error, a locked database) degrades the
            # answer instead of failing it; the log keeps the cause.
            logger.exception("%s search failed; answering with the other half", half)
        RETRIEVAL_DEGRADED.labels(failed=half).inc()
        return None

    def _keyword(
        self, index_id: str, text: str, k: int, filters: SearchFilters, settings: RetrievalSettings, feedback: bool
    ) -> Scored:
        terms = analyze(text)
        with timed("keyword"):
            first = self._store.keyword_search(index_id, terms, k, filters)
        return self._with_feedback(index_id, terms, first, first, k, filters, settings) if feedback else first

    def _with_feedback(
        self,
        index_id: str,
        terms: list[str],
        keyword: Scored,
        source: Scored,
        k: int,
        filters: SearchFilters,
        settings: RetrievalSettings,
    ) -> Scored:
        """``keyword`` plus the weighted scores of a search for the expansion terms of ``source``'s best chunks."""
        if settings.feedback_chunks == 0 or settings.feedback_weight == 0 or not source:
            return keyword
        with timed("feedback"):
            top = self._store.hits(source[: settings.feedback_chunks], filters.access)
            feedback = [(analyze(f"{hit.title or ''}\n{hit.section or ''}\n{hit.text}"), hit.score) for hit in top]
            extra = expansion_terms(feedback, set(terms), settings.feedback_terms)
            if extra:
                counts = self._store.term_chunk_counts(index_id, extra)
                extra = within_budget(extra, counts, settings.feedback_max_postings)
            if not extra:
                return keyword
            second = self._store.keyword_search(index_id, extra, k, filters)
            return add_feedback(keyword, second, settings.feedback_weight, k)

    def _dense(self, index_id: str, text: str, k: int, filters: SearchFilters) -> Scored:
        return self._embed_and_search(index_id, text, k, filters)[1]

    def _embed_and_search(self, index_id: str, text: str, k: int, filters: SearchFilters) -> tuple[Vectors, Scored]:
        with timed("embed"):
            vector = self._embedder.embed([text], kind="query")[0]
        with timed("dense"):
            scored = self._vector_search(index_id, vector, k, filters)
        if scored:
            RETRIEVAL_TOP_SIMILARITY.observe(scored[0][1])
        return vector, scored

    def _vector_search(self, index_id: str, vector: Vectors, k: int, filters: SearchFilters) -> Scored:
        if filters:
            return self._index.search_filtered(index_id, vector, k, filters, self._store)
        return self._index.search(index_id, vector, k)

    def _with_dense_feedback(
        self,
        index_id: str,
        vector: Vectors,
        dense: Scored,
        source: Scored,
        k: int,
        filters: SearchFilters,
        settings: RetrievalSettings,
    ) -> Scored:
        """The dense half searched again with the query moved towards the mean vector of ``source``'s best
        chunks, by ``dense_feedback_weight`` (Rocchio); ``dense`` itself when that is off."""
        if settings.dense_feedback_chunks == 0 or settings.dense_feedback_weight == 0 or not source:
            return dense
        with timed("dense_feedback"):
            try:
                centroid = self._store.chunk_vectors([cid for cid, _ in source[: settings.dense_feedback_chunks]])
            except NotFoundError:  # a feedback chunk was deleted meanwhile: rank without feedback
                return dense
            moved = vector + settings.dense_feedback_weight * centroid.mean(axis=0)
            norm = float(np.linalg.norm(moved))
            if norm == 0:
                return dense
            return self._vector_search(index_id, (moved / norm).astype(np.float32), k, filters)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
