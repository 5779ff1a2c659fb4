"""Query embedding latency and throughput with the embedding micro-batcher on and off, in process.

N closed-loop query threads embed SciFact queries one per call (as retrieval does), alone or next to one bulk
thread that embeds chunk texts 64 per call (as an ingestion job does). Each configuration runs every load;
the model is the real all-MiniLM-L6-v2 on ONNX Runtime with the service's default threads.

    python bench/micro_batching.py ../shared/datasets/scifact --seconds 10 > bench/results/micro-batching.json

Prints one JSON object: per configuration and load, query p50/p95/p99 and queries/s, bulk chunks/s, the
mean texts per model run, and the ratios of each batching configuration to ``off``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from ragserve.domain import DocumentInput
from ragserve.embedding.batching import MicroBatcher
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.embedding.protocol import Embedder
from ragserve.evaluation import percentile, read_corpus
from ragserve.ingest.chunk_plan import embed_text
from ragserve.ingest.chunking import chunk_document
from ragserve.ingest.pipeline import parse_input
from ragserve.settings import Settings

BULK_CALL_TEXTS = 64
# (name, window_ms, max_batch, max_document_batch); None: the bare model.
CONFIGS: list[tuple[str, float, int, int] | None] = [
    None,
    ("on: window 10 ms, documents 4 per batch (defaults)", 10.0, 64, 4),
    ("on: window 0 ms, documents 4 per batch", 0.0, 64, 4),
    ("on: window 10 ms, documents 64 per batch", 10.0, 64, 64),
]


def chunk_texts(dataset: Path, limit: int, embedder: OnnxEmbedder) -> list[str]:
    """The texts ingestion would embed for the first ``limit`` documents (title and section included)."""
    chunking = Settings().chunking
    texts = []
    for doc in list(read_corpus(dataset))[:limit]:
        item = DocumentInput(collection="bench", external_id=doc.id, title=doc.title or None, text=doc.text)
        for draft in chunk_document(
            parse_input(item),
            embedder.count_tokens,
            max_tokens=chunking.max_tokens,
            overlap_tokens=chunking.overlap_tokens,
        ):
            texts.append(embed_text(item.title, " > ".join(draft.section_path) or None, draft.text))
    return texts


def batch_totals() -> dict[str, float]:
    """Model runs and texts the micro-batcher has sent so far, by kind (cumulative Prometheus samples)."""
    totals = {}
    for kind in ("query", "document"):
        for stat in ("count", "sum"):
            value = REGISTRY.get_sample_value(f"ragserve_embedding_batch_texts_{stat}", {"kind": kind})
            totals[f"{kind}_{stat}"] = value or 0.0
    return totals


def run_load(
    embedder: Embedder, queries: list[str], chunks: list[str], clients: int, with_bulk: bool, seconds: float
) -> dict[str, Any]:
    latencies_ms: list[float] = []
    bulk_done: list[float] = []  # when each bulk call finished
    stop = threading.Event()

    def query_loop(n: int) -> None:
        i = n
        while not stop.is_set():
            started = time.perf_counter()
            embedder.embed([queries[i % len(queries)]], kind="query")
            latencies_ms.append((time.perf_counter() - started) * 1000)
            i += clients

    def bulk_loop() -> None:
        i = 0
        while not stop.is_set():
            start = i % (len(chunks) - BULK_CALL_TEXTS)
            embedder.embed(chunks[start : start + BULK_CALL_TEXTS], kind="document")
            bulk_done.append(time.perf_counter())
            i += BULK_CALL_TEXTS

    query_threads = [threading.Thread(target=query_loop, args=(n,)) for n in range(clients)]
    bulk_thread = threading.Thread(target=bulk_loop)
    before = batch_totals()
    started = time.perf_counter()
    for thread in query_threads + ([bulk_thread] if with_bulk else []):
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in query_threads:
        thread.join()
    elapsed = time.perf_counter() - started
    after = batch_totals()
    if with_bulk:
        bulk_thread.join()
    # Calls that ended inside the measured window, over the time to the last of them: the rate under load.
    in_window = [t for t in bulk_done if t <= started + elapsed]
    bulk_chunks_per_s = len(in_window) * BULK_CALL_TEXTS / (in_window[-1] - started) if in_window else 0.0
    runs = {kind: after[f"{kind}_count"] - before[f"{kind}_count"] for kind in ("query", "document")}
    texts = {kind: after[f"{kind}_sum"] - before[f"{kind}_sum"] for kind in ("query", "document")}
    return {
        "query_clients": clients,
        "bulk_thread": with_bulk,
        "queries": len(latencies_ms),
        "queries_per_s": len(latencies_ms) / elapsed,
        "p50_ms": percentile(latencies_ms, 50),
        "p95_ms": percentile(latencies_ms, 95),
        "p99_ms": percentile(latencies_ms, 99),
        "bulk_chunks_per_s": bulk_chunks_per_s,
        "mean_texts_per_query_run": texts["query"] / runs["query"] if runs["query"] else None,
        "mean_texts_per_document_run": texts["document"] / runs["document"] if runs["document"] else None,
    }


def ratios(result: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    keys = ("p50_ms", "p95_ms", "p99_ms", "queries_per_s", "bulk_chunks_per_s")
    return {key: result[key] / baseline[key] if baseline[key] else None for key in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0, help="per configuration and load")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--documents", type=int, default=500, help="corpus documents chunked for the bulk thread")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)")
    args = parser.parse_args()

    queries = [json.loads(line)["text"] for line in (args.dataset / "queries.jsonl").read_text().splitlines()]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ragserve-bench-") as cache:
        model = OnnxEmbedder(Path(cache), intra_op_threads=args.threads or None)
        chunks = chunk_texts(args.dataset, args.documents, model)
        model.embed(chunks[:32])  # warm-up: the first runs allocate and plan
        model.embed(queries[:8], kind="query")
        loads = [(1, False), (1, True), (args.clients, False), (args.clients, True)]
        results: list[dict[str, Any]] = []
        for config in CONFIGS:
            embedder: Embedder = model
            if config is not None:
                embedder = MicroBatcher(model, window_ms=config[1], max_batch=config[2], max_document_batch=config[3])
            try:
                for clients, with_bulk in loads:
                    run = run_load(embedder, queries, chunks, clients, with_bulk, args.seconds)
                    results.append({"config": config[0] if config else "off", **run})
            finally:
                if isinstance(embedder, MicroBatcher):
                    embedder.close()
    baseline = {(r["query_clients"], r["bulk_thread"]): r for r in results if r["config"] == "off"}
    for result in results:
        if result["config"] != "off":
            result["vs_off"] = ratios(result, baseline[result["query_clients"], result["bulk_thread"]])
    report = {
        "dataset": args.dataset.name,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1_5_15_before": [round(x, 2) for x in load_before],
            "load_average_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        },
        "model_id": model.model_id,
        "intra_op_threads": args.threads or os.cpu_count(),
        "bulk_call_texts": BULK_CALL_TEXTS,
        "bulk_chunks_available": len(chunks),
        "seconds_per_run": args.seconds,
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
