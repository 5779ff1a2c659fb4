"""Query embedding latency and throughput with the embedding micro-batcher on and off, in process.

N closed-loop query threads embed SciFact queries one per call (as retrieval does), alone or next to one bulk
thread that embeds chunk texts 64 per call (as an ingestion job does). The model is the real all-MiniLM-L6-v2
on ONNX Runtime with the service's default threads. Configurations take turns within each round, so that
other work on a shared machine weighs on all of them alike; samples are pooled over the rounds.

    python bench/micro_batching.py ../shared/datasets/scifact --rounds 3 --seconds 8

Prints one JSON object: per configuration and load, query p50/p95/p99 and queries/s, bulk chunks/s, the
mean texts per model run, the ratios of each batching configuration to ``off``, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from dataclasses import dataclass, field
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
# (name, window_ms, max_batch, max_document_batch); "off", the bare model, runs beside them.
CONFIGS: list[tuple[str, float, int, int]] = [
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


@dataclass
class Samples:
    """What the runs of one configuration under one load measured, pooled over rounds."""

    latencies_ms: list[float] = field(default_factory=list)
    query_seconds: float = 0.0
    bulk_chunks: int = 0
    bulk_seconds: float = 0.0
    runs: dict[str, float] = field(default_factory=lambda: {"query": 0.0, "document": 0.0})
    texts: dict[str, float] = field(default_factory=lambda: {"query": 0.0, "document": 0.0})

    def summary(self) -> dict[str, Any]:
        runs, texts = self.runs, self.texts
        return {
            "queries": len(self.latencies_ms),
            "queries_per_s": len(self.latencies_ms) / self.query_seconds,
            "p50_ms": percentile(self.latencies_ms, 50),
            "p95_ms": percentile(self.latencies_ms, 95),
            "p99_ms": percentile(self.latencies_ms, 99),
            "bulk_chunks_per_s": self.bulk_chunks / self.bulk_seconds if self.bulk_seconds else 0.0,
            "mean_texts_per_query_run": texts["query"] / runs["query"] if runs["query"] else None,
            "mean_texts_per_document_run": texts["document"] / runs["document"] if runs["document"] else None,
        }


def run_load(
    embedder: Embedder, texts: tuple[list[str], list[str]], clients: int, with_bulk: bool, seconds: float, into: Samples
) -> None:
    """Query threads (and the bulk thread) for ``seconds``; the queries go on until the bulk call in flight
    ends (at most ``seconds`` more), so every bulk chunk counted was embedded under the query load."""
    queries, chunks = texts
    stop_queries, stop_bulk = threading.Event(), threading.Event()
    bulk_done: list[float] = []  # when each bulk call finished

    def query_loop(n: int) -> None:
        i = n
        while not stop_queries.is_set():
            started = time.perf_counter()
            embedder.embed([queries[i % len(queries)]], kind="query")
            into.latencies_ms.append((time.perf_counter() - started) * 1000)
            i += clients

    def bulk_loop() -> None:
        i = 0
        while not stop_bulk.is_set():
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
    stop_bulk.set()
    if with_bulk:
        bulk_thread.join(timeout=seconds)  # may time out: strict query priority can starve the bulk thread
    is_bulk_caught_up = not bulk_thread.is_alive()
    stop_queries.set()
    for thread in query_threads:
        thread.join()
    elapsed = time.perf_counter() - started
    after = batch_totals()
    into.query_seconds += elapsed
    if with_bulk:
        bulk_thread.join()
        finished = [t for t in bulk_done if t <= started + elapsed]
        into.bulk_chunks += len(finished) * BULK_CALL_TEXTS
        # A call still running when the queries stopped is not counted, nor is its time after the last call done.
        into.bulk_seconds += (finished[-1] - started) if finished and is_bulk_caught_up else elapsed
    for kind in ("query", "document"):
        into.runs[kind] += after[f"{kind}_count"] - before[f"{kind}_count"]
        into.texts[kind] += after[f"{kind}_sum"] - before[f"{kind}_sum"]


def ratios(result: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    keys = ("p50_ms", "p95_ms", "p99_ms", "queries_per_s", "bulk_chunks_per_s")
    return {key: result[key] / baseline[key] if baseline[key] else None for key in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--seconds", type=float, default=8.0, help="per configuration, load and round")
    parser.add_argument("--rounds", type=int, default=3, help="configurations alternate within each round")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--documents", type=int, default=500, help="corpus documents chunked for the bulk thread")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)")
    args = parser.parse_args()

    queries = [json.loads(line)["text"] for line in (args.dataset / "queries.jsonl").read_text().splitlines()]
    loads = [(1, False), (1, True), (args.clients, False), (args.clients, True)]
    load_averages = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="ragserve-bench-") as cache:
        model = OnnxEmbedder(Path(cache), intra_op_threads=args.threads or None)
        texts = (queries, chunk_texts(args.dataset, args.documents, model))
        model.embed(texts[1][:32])  # warm-up: the first runs allocate and plan
        model.embed(queries[:8], kind="query")
        embedders: dict[str, Embedder] = {
            name: MicroBatcher(model, window_ms=window_ms, max_batch=max_batch, max_document_batch=documents)
            for name, window_ms, max_batch, documents in CONFIGS
        }
        embedders = {"off": model, **embedders}
        samples = {(name, load): Samples() for name in embedders for load in loads}
        try:
            # Round-robin over configurations, so that other work on the machine weighs on all of them alike.
            for _ in range(args.rounds):
                for load in loads:
                    for name, embedder in embedders.items():
                        run_load(embedder, texts, *load, args.seconds, samples[name, load])
                load_averages.append(os.getloadavg())
        finally:
            for embedder in embedders.values():
                if isinstance(embedder, MicroBatcher):
                    embedder.close()
    results = [
        {"config": name, "query_clients": load[0], "bulk_thread": load[1], **pooled.summary()}
        for (name, load), pooled in samples.items()
    ]
    baseline = {(r["query_clients"], r["bulk_thread"]): r for r in results if r["config"] == "off"}
    for result in results:
        if result["config"] != "off":
            result["vs_off"] = ratios(result, baseline[result["query_clients"], result["bulk_thread"]])
    report = {
        "dataset": args.dataset.name,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1_min_at_start_and_after_each_round": [round(x[0], 2) for x in load_averages],
        },
        "model_id": model.model_id,
        "intra_op_threads": args.threads or os.cpu_count(),
        "bulk_call_texts": BULK_CALL_TEXTS,
        "bulk_chunks_available": len(texts[1]),
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
