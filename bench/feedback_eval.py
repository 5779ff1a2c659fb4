"""Keyword feedback through the real service: nDCG@10 and per-query latency of keyword and hybrid search with
feedback off and on (the defaults), on a dataset's test split, over whatever the data directory holds.

    RAGSERVE_DATA_DIR=/work/quality-data/nfcorpus python bench/feedback_eval.py ../shared/datasets/nfcorpus

Unlike ``ragserve eval`` it never ingests: with ``--embedded-only`` judgements of documents not (yet) in the
collection are dropped, and queries left without a relevant document with them, so a corpus still being
embedded can be studied as the sub-corpus it is. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from ragserve.domain import SearchFilters
from ragserve.evaluation import ndcg_at, percentile, read_queries
from ragserve.service import RagService
from ragserve.settings import Settings


async def measure(settings: Settings, dataset: Path, name: str, split: str, embedded_only: bool) -> dict[str, Any]:
    service = RagService.open(settings)
    try:
        await service.start(run_jobs=False)
        collection_id = service.store.get_collection(name).id
        index_id = service.versions.index_route(collection_id).active.index_id
        present = service.store.external_ids(name)
        queries, qrels = read_queries(dataset, split)
        if embedded_only:
            qrels = {q: {d: r for d, r in rel.items() if d in present} for q, rel in qrels.items()}
            queries = {q: t for q, t in queries.items() if any(r > 0 for r in qrels[q].values())}
        out: dict[str, Any] = {"queries": len(queries)}
        for mode in ("keyword", "hybrid"):
            ndcg, latencies = [], []
            for qid, text in queries.items():
                start = time.perf_counter()
                ranking = service.retriever.rank(collection_id, index_id, text, 100, SearchFilters(), mode)  # type: ignore[arg-type]
                latencies.append((time.perf_counter() - start) * 1000)
                ranked = service.store.external_ids_of([cid for cid, _ in ranking.scored])
                ndcg.append(ndcg_at(ranked, qrels[qid]))
            out[mode] = {
                "ndcg@10": round(sum(ndcg) / len(ndcg), 4),
                "latency_ms_p50": round(percentile(latencies, 50), 2),
                "latency_ms_p95": round(percentile(latencies, 95), 2),
            }
        return out
    finally:
        await service.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--embedded-only", action="store_true")
    args = parser.parse_args()
    base = Settings()
    report: dict[str, Any] = {"dataset": args.dataset.name, "split": args.split}
    for label, chunks in (("feedback_off", 0), ("feedback_on", base.retrieval.feedback_chunks or 5)):
        settings = base.model_copy(update={"retrieval": base.retrieval.model_copy(update={"feedback_chunks": chunks})})
        report[label] = asyncio.run(
            measure(settings, args.dataset, args.dataset.resolve().name, args.split, args.embedded_only)
        )
        print(label, report[label], flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
