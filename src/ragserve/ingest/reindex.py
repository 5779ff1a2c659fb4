"""Building a new index version of a collection from what is stored: each ready document's parsed form is
chunked under the version's configuration, embedded through the cache (unchanged chunk text is never embedded
again) and written into the version, in batches, with progress. Ingestion keeps the version current meanwhile
(a building version is live), and a document that changes while it is being rebuilt is left to ingestion.

Building is idempotent: after a restart it starts again from the first document, and chunks already written
are kept as they are.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from ragserve.domain import Chunk, DocumentSource, IndexState, IndexVersion, ParsedDocument, TextBlock
from ragserve.embedding.protocol import Embedder
from ragserve.ingest.chunk_plan import CachedEmbeddings, PlannedChunk, new_chunks, plan_chunks
from ragserve.ingest.pipeline import apply_changes
from ragserve.stores.protocol import ChunkStore, EmbeddingCache, IndexVersionStore, RebuildSource, VectorIndex

logger = logging.getLogger(__name__)


class BuildSource(RebuildSource, ChunkStore, Protocol):
    """Documents to rebuild from, and the active version's chunks for those stored without a parsed form."""


def parsed_from_chunks(chunks: list[Chunk]) -> ParsedDocument:
    """A document stored before parsed forms were kept, put back together from its chunks: one block per run
    of chunks in the same section, with the overlap between consecutive chunks removed."""
    blocks: list[TextBlock] = []
    section: str | None = None
    text = ""
    for chunk in sorted(chunks, key=lambda c: c.ordinal):
        if text and chunk.section == section:
            text += _without_overlap(text, chunk.text)
            continue
        if text:
            blocks.append(TextBlock(text, tuple(section.split(" > ")) if section else (), None))
        section, text = chunk.section, chunk.text
    if text:
        blocks.append(TextBlock(text, tuple(section.split(" > ")) if section else (), None))
    return ParsedDocument(blocks=tuple(blocks))


def _without_overlap(before: str, after: str) -> str:
    """``after`` less its longest prefix that ends ``before`` (the sentences a chunk repeats from the last)."""
    for size in range(min(len(before), len(after)), 0, -1):
        if before.endswith(after[:size]):
            return after[size:]
    return " " + after


class IndexBuilder:
    """Builds one index version at a time, in the calling (worker) thread."""

    def __init__(
        self,
        source: BuildSource,
        versions: IndexVersionStore,
        cache: EmbeddingCache,
        index: VectorIndex,
        embedder: Embedder,
        batch_documents: int = 32,
    ) -> None:
        self._source = source
        self._versions = versions
        self._index = index
        self._embedder = embedder
        self._embeddings = CachedEmbeddings(cache, embedder)
        self._batch = batch_documents

    def build(self, version: IndexVersion, stop: threading.Event) -> None:
        """Fill ``version`` and mark it ready (or failed, with the error); returns early if ``stop`` is set."""
        after: str | None = None
        built = 0
        try:
            while not stop.is_set():
                sources = self._source.document_sources(version.collection_id, after, self._batch)
                if not sources:
                    self._versions.update_version(version.index_id, state=IndexState.READY, built=built)
                    logger.info("index version %s of %s is built", version.version, version.collection_id)
                    return
                self._build_batch(version, sources)
                built += len(sources)
                after = sources[-1].document_id
                self._versions.update_version(version.index_id, built=built)
        except Exception as exc:  # a failed build must be reported on the version, not kill the service
            logger.exception("building index version %s of %s failed", version.version, version.collection_id)
            self._versions.update_version(version.index_id, state=IndexState.FAILED, error=str(exc)[:500])

    def _build_batch(self, version: IndexVersion, sources: list[DocumentSource]) -> None:
        plans: dict[str, list[PlannedChunk]] = {}
        for source in sources:
            parsed = source.parsed or parsed_from_chunks(self._source.get_chunks(source.document_id))
            plans[source.document_id] = plan_chunks(parsed, source.title, version.config, self._embedder)
        vectors = self._embeddings.vectors(c for planned in plans.values() for c in planned)
        for source in sources:
            chunks = new_chunks(plans[source.document_id], vectors)
            changes = self._source.write_version_chunks(version.index_id, source, chunks)
            if changes is not None:
                apply_changes(self._index, version.index_id, changes)
