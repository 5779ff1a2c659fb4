"""One query vector per request: the answer cache embeds a question to look for a similar cached one; when it
finds none, retrieval and the extractive generator embed the same text again. ``share_query_vector`` puts
the vector in the request's context (a context variable, so worker threads the request starts see it), and
``ReusingEmbedder`` returns it instead of computing it again. A vector is only reused for the same model and
exactly the same text, so one that outlives its request is never wrong, only unused."""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar

import numpy as np

from ragserve.embedding.protocol import Embedder, EmbedKind, Vectors

_SHARED: ContextVar[tuple[str, str, Vectors] | None] = ContextVar("ragserve_shared_query_vector", default=None)


def share_query_vector(model_id: str, text: str, vector: Vectors) -> None:
    """Offer ``vector``, ``model_id``'s query embedding of ``text``, to the rest of the current context."""
    _SHARED.set((model_id, text, np.asarray(vector, dtype=np.float32).reshape(-1)))


def shared_query_vector(model_id: str, text: str) -> Vectors | None:
    """The vector shared for exactly this model and text in the current context, if any."""
    shared = _SHARED.get()
    if shared is None or shared[0] != model_id or shared[1] != text:
        return None
    return shared[2].copy()


class ReusingEmbedder:
    """Implements ``Embedder`` around ``inner``: a single query text whose vector was shared in this context
    costs nothing; everything else goes to ``inner``."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed(self, texts: Sequence[str], kind: EmbedKind = "document") -> Vectors:
        if kind == "query" and len(texts) == 1:
            vector = shared_query_vector(self.inner.model_id, texts[0])
            if vector is not None:
                return vector.reshape(1, -1)
        return self.inner.embed(texts, kind)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.inner.count_tokens(texts)
