"""From a parsed document to stored chunks for one index configuration: chunk, name each chunk by the hash
of what the model sees, embed only what the cache has never seen. Shared by ingestion and by the building of
new index versions, so both produce the same chunks for the same document and configuration."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ragserve.domain import ChunkDraft, IndexConfig, NewChunk, ParsedDocument
from ragserve.embedding.protocol import Embedder
from ragserve.ingest.chunking import chunk_document
from ragserve.observability.metrics import EMBEDDING_CACHE, timed
from ragserve.stores.protocol import EmbeddingCache


def embed_text(title: str | None, section: str | None, text: str) -> str:
    """What the model sees for a chunk: the document title and section heading give it context."""
    return "\n".join(part for part in (title, section, text) if part)


@dataclass(frozen=True, slots=True)
class PlannedChunk:
    draft: ChunkDraft
    section: str | None
    model_text: str
    key: str  # embedding cache key: model id and the sha256 of ``model_text``


def plan_chunks(
    parsed: ParsedDocument, title: str | None, config: IndexConfig, embedder: Embedder
) -> list[PlannedChunk]:
    """The document's chunks under ``config``. Raises ``ValueError`` for an impossible configuration."""
    with timed("chunk"):
        drafts = chunk_document(
            parsed, embedder.count_tokens, max_tokens=config.max_tokens, overlap_tokens=config.overlap_tokens
        )
    planned = []
    for draft in drafts:
        section = " > ".join(draft.section_path) or None
        model_text = embed_text(title, section, draft.text)
        key = f"{embedder.model_id}:{hashlib.sha256(model_text.encode()).hexdigest()}"
        planned.append(PlannedChunk(draft, section, model_text, key))
    return planned


class CachedEmbeddings:
    """Vectors for planned chunks: from the cache where present, else embedded (in model-sized batches over
    everything asked for at once) and cached."""

    def __init__(self, cache: EmbeddingCache, embedder: Embedder) -> None:
        self._cache = cache
        self._embedder = embedder

    def vectors(self, planned: Iterable[PlannedChunk]) -> dict[str, bytes]:
        texts = {p.key: p.model_text for p in planned}
        found = self._cache.get_vectors(sorted(texts))
        EMBEDDING_CACHE.labels(result="hit").inc(len(found))
        missing = {key: text for key, text in texts.items() if key not in found}
        EMBEDDING_CACHE.labels(result="miss").inc(len(missing))
        if missing:
            with timed("embed"):
                matrix = self._embedder.embed(list(missing.values()), kind="document")
            fresh = [
                (key, np.ascontiguousarray(row, dtype="<f4").tobytes())
                for key, row in zip(missing, matrix, strict=True)
            ]
            self._cache.put_vectors(fresh)
            found.update(fresh)
        return found


def new_chunks(planned: Sequence[PlannedChunk], vectors: dict[str, bytes]) -> list[NewChunk]:
    return [
        NewChunk(
            ordinal=p.draft.ordinal,
            text=p.draft.text,
            section=p.section,
            page=p.draft.page,
            token_count=p.draft.token_count,
            content_hash=p.key.rsplit(":", 1)[1],
            vector=vectors[p.key],
        )
        for p in planned
    ]
