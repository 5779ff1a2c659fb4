"""Search: validate the query, run the keyword and dense halves, fuse, and load the hits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ragserve.domain import SearchFilters, SearchHit, SearchMode, SearchResult
from ragserve.embedding.protocol import Embedder
from ragserve.errors import EmptyQueryError, NotFoundError, PayloadTooLargeError
from ragserve.observability.metrics import timed
from ragserve.retrieval.fusion import Scored, rrf_fusion, zscore_fusion
from ragserve.settings import RetrievalSettings
from ragserve.stores.analyzer import analyze
from ragserve.stores.protocol import ChunkStore, DocumentStore, KeywordIndex, VectorIndex


class SearchStore(DocumentStore, ChunkStore, KeywordIndex, Protocol):
    """What search needs of the store (the embedded store is all three)."""


@dataclass(frozen=True, slots=True)
class SearchQuery:
    text: str
    k: int = 10
    offset: int = 0
    collection: str | None = None
    filters: SearchFilters = field(default_factory=SearchFilters)
    mode: SearchMode | None = None


def validate_query(text: str, max_chars: int) -> str:
    """The query stripped of surrounding space. Raises ``EmptyQueryError`` or ``PayloadTooLargeError``."""
    stripped = text.strip()
    if not stripped:
        raise EmptyQueryError("the query is empty")
    if len(text) > max_chars:
        raise PayloadTooLargeError(f"the query has {len(text)} characters; the limit is {max_chars}")
    return stripped


class Retriever:
    """Hybrid retrieval over one collection. Synchronous and CPU-bound: call it from a worker thread."""

    def __init__(
        self,
        store: SearchStore,
        index: VectorIndex,
        embedder: Embedder,
        settings: RetrievalSettings,
        default_collection: str,
    ) -> None:
        self._store = store
        self._index = index
        self._embedder = embedder
        self._settings = settings
        self._default_collection = default_collection

    def search(self, query: SearchQuery) -> SearchResult:
        mode: SearchMode = query.mode or self._settings.default_mode
        name = query.collection or self._default_collection
        try:
            collection_id = self._store.get_collection(name).id
        except NotFoundError:
            if query.collection is not None and query.collection != self._default_collection:
                raise
            return SearchResult(hits=(), mode=mode)
        scored = self.rank(collection_id, query.text, query.k + query.offset, query.filters, mode)
        with timed("load"):
            hits = self._store.hits(scored[query.offset : query.offset + query.k])
        return SearchResult(hits=tuple(hits), mode=mode)

    def rank(self, collection_id: str, text: str, n: int, filters: SearchFilters, mode: SearchMode) -> Scored:
        """The best ``n`` (chunk_id, score) pairs of the collection for ``text``."""
        candidates = max(self._settings.candidates, n)
        keyword: Scored = []
        dense: Scored = []
        if mode in ("keyword", "hybrid"):
            with timed("keyword"):
                keyword = self._store.keyword_search(collection_id, analyze(text), candidates, filters)
        if mode in ("dense", "hybrid"):
            dense = self._dense(collection_id, text, candidates, filters)
        if mode == "keyword":
            return keyword[:n]
        if mode == "dense":
            return dense[:n]
        with timed("fuse"):
            if self._settings.fusion == "rrf":
                fused = rrf_fusion([dense, keyword], self._settings.rrf_k)
            else:
                fused = zscore_fusion(dense, keyword, self._settings.hybrid_alpha)
        return fused[:n]

    def _dense(self, collection_id: str, text: str, k: int, filters: SearchFilters) -> Scored:
        with timed("embed"):
            vector = self._embedder.embed([text], kind="query")[0]
        with timed("dense"):
            allowed = self._store.chunk_ids(collection_id, filters) if filters else None
            return self._index.search(collection_id, vector, k, allowed)


def documents_of(hits: list[SearchHit]) -> list[str]:
    """Document ids in first-seen order (max-passage ranking of documents)."""
    seen: dict[str, None] = {}
    for hit in hits:
        seen.setdefault(hit.document_id, None)
    return list(seen)
