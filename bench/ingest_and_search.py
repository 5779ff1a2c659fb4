"""Ingestion throughput against the raw model, and /v1/search latency under concurrent clients.

Runs a real ``ragserve serve`` process on a fresh data directory, ingests a BEIR corpus through the HTTP API,
then sends the dataset's queries from N concurrent closed-loop clients. The raw model's throughput is
measured first, in this process, on exactly the chunk texts the pipeline embeds.

    python bench/ingest_and_search.py ../shared/datasets/scifact --limit 2000 --clients 8

``--precision int8`` runs the int8 encoder (``RAGSERVE_EMBEDDING__PRECISION``), in this process and the server.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ragserve.domain import DocumentInput
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.evaluation import percentile, read_corpus
from ragserve.ingest.chunk_plan import embed_text
from ragserve.ingest.chunking import chunk_document
from ragserve.ingest.pipeline import parse_input
from ragserve.settings import Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raw_model(docs: list[DocumentInput], embedder: OnnxEmbedder) -> dict[str, Any]:
    """Embed the pipeline's chunk texts with the bare model: the floor ingestion is compared to."""
    chunking = Settings().chunking
    texts = []
    for doc in docs:
        for draft in chunk_document(
            parse_input(doc),
            embedder.count_tokens,
            max_tokens=chunking.max_tokens,
            overlap_tokens=chunking.overlap_tokens,
        ):
            texts.append(embed_text(doc.title, " > ".join(draft.section_path) or None, draft.text))
    start = time.perf_counter()
    embedder.embed(texts)
    elapsed = time.perf_counter() - start
    single = []
    for text in texts[:200]:
        t = time.perf_counter()
        embedder.embed([text[:100]], kind="query")
        single.append((time.perf_counter() - t) * 1000)
    return {
        "model_id": embedder.model_id,
        "chunks": len(texts),
        "chunks_per_s": len(texts) / elapsed,
        "docs_per_s": len(docs) / elapsed,
        "query_embed_ms_p50": percentile(single, 50),
    }


def _start(data_dir: Path, port: int, cache: Path, precision: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RAGSERVE_EMBEDDING__PRECISION": precision,
        "RAGSERVE_DATA_DIR": str(data_dir),
        "RAGSERVE_EMBEDDING__CACHE_DIR": str(cache),
        "RAGSERVE_SERVER__LOG_LEVEL": "warning",
    }
    process = subprocess.Popen([sys.executable, "-m", "ragserve.cli", "serve", "--port", str(port)], env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


def ingest(base: str, docs: list[DocumentInput]) -> dict[str, float]:
    start = time.perf_counter()
    jobs = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for i in range(0, len(docs), 100):
            body = {
                "collection": "bench",
                "documents": [
                    {"external_id": d.external_id, "title": d.title, "text": d.text} for d in docs[i : i + 100]
                ],
            }
            jobs.append(client.post("/v1/documents", json=body).json()["job_id"])
        for job_id in jobs:
            while client.get(f"/v1/jobs/{job_id}").json()["status"] in ("queued", "running"):
                time.sleep(0.2)
        elapsed = time.perf_counter() - start
        total = client.get("/v1/documents", params={"collection": "bench", "limit": 1}).json()["total"]
        chunks = 0
        for offset in range(0, total, 1000):
            page = client.get("/v1/documents", params={"collection": "bench", "limit": 1000, "offset": offset})
            chunks += sum(d["chunk_count"] for d in page.json()["documents"])
    return {
        "seconds": elapsed,
        "documents": total,
        "chunks": chunks,
        "chunks_per_s": chunks / elapsed,
        "docs_per_s": total / elapsed,
    }


async def search_load(base: str, queries: list[str], clients: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client_loop(n: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            i = n
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                response = await client.post(
                    "/v1/search", json={"query": queries[i % len(queries)], "collection": "bench", "k": 10}
                )
                latencies.append((time.perf_counter() - t) * 1000)
                errors += response.status_code != 200
                i += clients

    start = time.perf_counter()
    await asyncio.gather(*(client_loop(n) for n in range(clients)))
    elapsed = time.perf_counter() - start
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "qps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--limit", type=int, default=0, help="first N corpus documents (0 = all)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    args = parser.parse_args()

    corpus = list(read_corpus(args.dataset))[: args.limit or None]
    docs = [DocumentInput(collection="bench", external_id=d.id, title=d.title or None, text=d.text) for d in corpus]
    queries = [json.loads(line)["text"] for line in (args.dataset / "queries.jsonl").read_text().splitlines()]
    work = Path(tempfile.mkdtemp(prefix="ragserve-bench-"))
    embedder = OnnxEmbedder(
        cache_dir=work / "models", batch_size=Settings().embedding.batch_size, precision=args.precision
    )
    raw = raw_model(docs, embedder)
    del embedder

    port = _free_port()
    server = _start(work / "data", port, work / "models", args.precision)
    try:
        base = f"http://127.0.0.1:{port}"
        ingestion = ingest(base, docs)
        search = asyncio.run(search_load(base, queries, args.clients, args.seconds))
        single = asyncio.run(search_load(base, queries, 1, min(args.seconds, 15.0)))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    report: dict[str, Any] = {
        "dataset": args.dataset.name,
        "model_id": raw["model_id"],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "raw_model": raw,
        "ingestion": ingestion,
        "ingestion_vs_raw_model": ingestion["chunks_per_s"] / raw["chunks_per_s"],
        "search_concurrent": search,
        "search_single_client": single,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
