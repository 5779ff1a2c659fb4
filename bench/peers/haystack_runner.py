"""Haystack's side of ``bench/peers.py``: its hybrid retrieval pipeline over an ``InMemoryDocumentStore``,
run with Haystack's own virtualenv.

- ``load_model``: the indexing pipeline (``SentenceTransformersDocumentEmbedder`` -> ``DocumentWriter``) and the
  query pipeline (``SentenceTransformersTextEmbedder`` -> ``InMemoryEmbeddingRetriever``, and
  ``InMemoryBM25Retriever``, both into ``DocumentJoiner(join_mode="reciprocal_rank_fusion")``), warmed up
  (each embedder loads the model, as Haystack's pipelines do).
- ``build``: the indexing pipeline over ``Document(id, title + newline + abstract)``. The store is in memory:
  nothing is written to disk, where ragserve's and txtai's builds end with the index on disk.
- ``queries``: the query pipeline, 100 documents from each retriever and from the joiner.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import torch
from harness import RANKING_DEPTH, Report, arguments, read_corpus, read_test_queries
from haystack import Document, Pipeline
from haystack.components.joiners import DocumentJoiner
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever, InMemoryEmbeddingRetriever
from haystack.components.writers import DocumentWriter
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.utils import ComponentDevice

# Haystack 3 moved the SentenceTransformers components out of its core into this integration package.
from haystack_integrations.components.embedders.sentence_transformers import (
    SentenceTransformersDocumentEmbedder,
    SentenceTransformersTextEmbedder,
)


def pipelines(model: str, store: InMemoryDocumentStore) -> tuple[Pipeline, Pipeline]:
    cpu = ComponentDevice.from_str("cpu")
    indexing = Pipeline()
    indexing.add_component("embedder", SentenceTransformersDocumentEmbedder(model=model, device=cpu, batch_size=32))
    indexing.add_component("writer", DocumentWriter(store))
    indexing.connect("embedder.documents", "writer.documents")

    query = Pipeline()
    query.add_component("text_embedder", SentenceTransformersTextEmbedder(model=model, device=cpu))
    query.add_component("embedding_retriever", InMemoryEmbeddingRetriever(store, top_k=RANKING_DEPTH))
    query.add_component("bm25_retriever", InMemoryBM25Retriever(store, top_k=RANKING_DEPTH))
    query.add_component("joiner", DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=RANKING_DEPTH))
    query.connect("text_embedder.embedding", "embedding_retriever.query_embedding")
    query.connect("bm25_retriever", "joiner")
    query.connect("embedding_retriever", "joiner")
    return indexing, query


def main() -> None:
    args = arguments(__doc__ or "")
    torch.set_num_threads(args.threads)
    report = Report(
        "haystack",
        {p: version(p) for p in ("haystack-ai", "sentence-transformers-haystack", "torch", "sentence-transformers")},
        {
            "pipeline": "InMemoryBM25Retriever + InMemoryEmbeddingRetriever -> DocumentJoiner(RRF), top_k 100 each",
            "store": "InMemoryDocumentStore() defaults (BM25L)",
            "torch_threads": args.threads,
        },
    )
    docs = read_corpus(args.dataset)
    store = InMemoryDocumentStore()

    def load() -> tuple[Pipeline, Pipeline]:
        indexing, query = pipelines(str(args.model), store)
        indexing.warm_up()
        query.warm_up()
        return indexing, query

    indexing, query = report.phase("load_model", load)
    documents = [Document(id=d.id, content=d.content) for d in docs]
    report.phase("build", lambda: indexing.run({"embedder": {"documents": documents}}))

    def search(text: str) -> dict[str, Any]:
        return query.run({"text_embedder": {"text": text}, "bm25_retriever": {"query": text}})

    def ranked_ids(result: dict[str, Any]) -> list[str]:
        return [str(d.id) for d in result["joiner"]["documents"]]

    queries = read_test_queries(args.dataset, args.split)
    report.queries(queries, search, ranked_ids)
    report.data["documents_in_store"] = store.count_documents()
    report.write(args.out, len(docs))


if __name__ == "__main__":
    main()
