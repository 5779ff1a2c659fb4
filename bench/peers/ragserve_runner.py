"""ragserve's side of ``bench/peers.py``: what ``ragserve eval DATASET --mode hybrid`` does, timed by phase.

Default settings except the data directory (a fresh one), the ONNX model cache (kept between runs: the export
from safetensors is a one-time conversion, not index building) and the ONNX Runtime threads (``--threads``).
Runs with ragserve's own virtualenv: ``PYTHONPATH=src .venv/bin/python bench/peers/ragserve_runner.py ...``.

- ``load_model``: ``RagService.open`` and ``start`` (the model, the stores, the in-process job runner).
- ``build``: ``cli._ensure_corpus``, eval's ingestion path: jobs of 100 documents through the ingestion
  pipeline (chunking, embedding, SQLite + FTS5, HNSW) until all are done.
- ``queries``: per test query ``retriever.rank(..., k=300, mode="hybrid")`` exactly as ``cli._evaluate``
  calls and times it (query embedding included), then the chunks' document ids as eval maps them.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

import anyio.to_thread
from harness import Report, arguments, read_corpus, read_test_queries

from ragserve import cli
from ragserve.domain import SearchFilters
from ragserve.service import RagService
from ragserve.settings import EmbeddingSettings, Settings

COLLECTION = "peers"


async def main() -> None:
    args = arguments(__doc__ or "")
    settings = Settings(
        data_dir=args.data_dir,
        embedding=EmbeddingSettings(threads=args.threads, cache_dir=args.data_dir.parent / "ragserve-onnx-cache"),
    )
    report = Report(
        "ragserve",
        {"ragserve": version("ragserve"), "onnxruntime": version("onnxruntime")},
        {
            "mode": "hybrid (default fusion)",
            "onnx_intra_op_threads": settings.embedding.threads,
            "chunk_tokens": settings.chunking.max_tokens,
            "max_seq_length": settings.embedding.max_seq_length,
            "batch_size": settings.embedding.batch_size,
        },
    )

    async def opened() -> RagService:
        service = RagService.open(settings)
        await service.start(run_jobs=True)
        return service

    service: RagService = await report.async_phase("load_model", opened)
    try:
        await report.async_phase("build", lambda: cli._ensure_corpus(service, args.dataset, COLLECTION))
        collection_id = service.store.get_collection(COLLECTION).id
        index_id = service.versions.index_route(collection_id).active.index_id
        queries = read_test_queries(args.dataset, args.split)

        def search(text: str) -> Any:
            return service.retriever.rank(collection_id, index_id, text, 300, SearchFilters(), "hybrid")

        def ranked_ids(ranking: Any) -> list[str]:
            # A hybrid half slower than retrieval.half_timeout_seconds is dropped (on a loaded machine, too).
            report.data["degraded_queries"] = report.data.get("degraded_queries", 0) + int(ranking.degraded)
            return service.store.external_ids_of([cid for cid, _ in ranking.scored])

        # In a worker thread, as eval runs each query, so the event loop (and the job runner) stay free.
        await anyio.to_thread.run_sync(report.queries, queries, search, ranked_ids)
    finally:
        await service.close()
    report.write(args.out, len(read_corpus(args.dataset)))


if __name__ == "__main__":
    asyncio.run(main())
