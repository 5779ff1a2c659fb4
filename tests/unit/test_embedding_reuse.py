"""ReusingEmbedder: a query vector shared in a request's context is reused for exactly that text and model, in
worker threads the request starts too; anything else is computed."""

from __future__ import annotations

import contextvars
from collections.abc import Sequence

import anyio.to_thread
import numpy as np

from ragserve.embedding.protocol import EmbedKind, Vectors
from ragserve.embedding.reuse import ReusingEmbedder, share_query_vector


class CountingEmbedder:
    """A fake model: every text embeds to the same vector; each call is recorded."""

    dimension = 4

    def __init__(self, model_id: str = "m") -> None:
        self.model_id = model_id
        self.calls: list[tuple[EmbedKind, list[str]]] = []

    def embed(self, texts: Sequence[str], kind: EmbedKind = "document") -> Vectors:
        self.calls.append((kind, list(texts)))
        return np.full((len(texts), self.dimension), 0.5, dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]


SHARED = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)


async def test_a_shared_query_vector_is_reused_in_worker_threads_of_the_request() -> None:
    inner = CountingEmbedder()
    embedder = ReusingEmbedder(inner)

    async def request() -> Vectors:
        share_query_vector("m", "how many days?", SHARED)
        return await anyio.to_thread.run_sync(embedder.embed, ["how many days?"], "query")

    reused = await request()
    assert np.array_equal(reused, SHARED.reshape(1, -1))
    assert inner.calls == []


def test_only_the_same_text_model_and_kind_reuse_the_vector() -> None:
    inner = CountingEmbedder()

    def run() -> None:
        share_query_vector("m", "how many days?", SHARED)
        ReusingEmbedder(inner).embed(["how many weeks?"], "query")  # another text
        ReusingEmbedder(inner).embed(["how many days?"], "document")  # another kind
        ReusingEmbedder(inner).embed(["how many days?", "x"], "query")  # a batch
        other_model = CountingEmbedder("other")
        ReusingEmbedder(other_model).embed(["how many days?"], "query")
        assert other_model.calls == [("query", ["how many days?"])]

    contextvars.copy_context().run(run)
    assert inner.calls == [
        ("query", ["how many weeks?"]),
        ("document", ["how many days?"]),
        ("query", ["how many days?", "x"]),
    ]


def test_a_vector_shared_in_one_context_is_not_seen_in_another() -> None:
    inner = CountingEmbedder()
    contextvars.copy_context().run(share_query_vector, "m", "q", SHARED)
    ReusingEmbedder(inner).embed(["q"], "query")
    assert inner.calls == [("query", ["q"])]
    assert ReusingEmbedder(inner).count_tokens(["a b"]) == [2]
    assert (ReusingEmbedder(inner).model_id, ReusingEmbedder(inner).dimension) == ("m", 4)
