"""Crash recovery on a whole corpus: ``kill -9`` the server in the middle of ingestion, restart it, and check that
the job finishes with the documents and chunks of a clean run and no duplicates anywhere.

    python bench/crash_recovery.py ../shared/datasets/scifact --kill-at 0.4

A clean run's chunk count comes from the deterministic chunker applied to the same inputs (what a clean
ingestion writes, without embedding). Prints one JSON object; exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ragserve.domain import DocumentInput, IndexConfig
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.evaluation import read_corpus
from ragserve.ingest.chunking import chunk_document
from ragserve.ingest.pipeline import parse_input
from ragserve.settings import Settings, VectorIndexSettings
from ragserve.stores.hnsw import HnswVectorIndex
from ragserve.stores.sqlite import SqliteStore
from ragserve.stores.sqlite_db import SqliteDatabase, fts_table


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(data_dir: Path, cache: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RAGSERVE_DATA_DIR": str(data_dir),
        "RAGSERVE_EMBEDDING__CACHE_DIR": str(cache),
        "RAGSERVE_SERVER__LOG_LEVEL": "warning",
    }
    process = subprocess.Popen([sys.executable, "-m", "ragserve.cli", "serve", "--port", str(port)], env=env)
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
        if process.poll() is not None:
            raise RuntimeError("server exited")


def _progress(client: httpx.Client, jobs: list[str]) -> tuple[int, int, list[str]]:
    states = [client.get(f"/v1/jobs/{j}").json() for j in jobs]
    return (
        sum(s["progress"]["done"] for s in states),
        sum(s["progress"]["total"] for s in states),
        [s["status"] for s in states],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--kill-at", type=float, default=0.4, help="share of documents done when killed")
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()

    corpus = list(read_corpus(args.dataset))[: args.limit or None]
    work = Path(tempfile.mkdtemp(prefix="ragserve-crash-"))
    data_dir, cache, port = work / "data", work / "models", _port()
    base = f"http://127.0.0.1:{port}"
    report: dict[str, Any] = {"dataset": args.dataset.name, "documents": len(corpus), "data_dir": str(data_dir)}

    server = _serve(data_dir, cache, port)
    client = httpx.Client(base_url=base, timeout=60)
    jobs = []
    for i in range(0, len(corpus), 100):
        docs = [{"external_id": d.id, "title": d.title, "text": d.text} for d in corpus[i : i + 100]]
        jobs.append(client.post("/v1/documents", json={"collection": "crash", "documents": docs}).json()["job_id"])
    while (done := _progress(client, jobs)[0]) < args.kill_at * len(corpus):
        time.sleep(0.2)
    server.send_signal(signal.SIGKILL)
    server.wait()
    report["killed_after_documents"] = done

    start = time.perf_counter()
    server = _serve(data_dir, cache, port)
    report["restart_ready_seconds"] = round(time.perf_counter() - start, 2)
    while any(s in ("queued", "running") for s in _progress(client, jobs)[2]):
        time.sleep(0.5)
    report["job_statuses"] = sorted(set(_progress(client, jobs)[2]))
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=120)

    embedder = OnnxEmbedder(cache_dir=cache)
    chunking = Settings().chunking
    expected = sum(
        len(
            chunk_document(
                parse_input(DocumentInput(collection="c", title=d.title or None, text=d.text)),
                embedder.count_tokens,
                max_tokens=chunking.max_tokens,
                overlap_tokens=chunking.overlap_tokens,
            )
        )
        for d in corpus
    )
    db = sqlite3.connect(data_dir / "ragserve.sqlite3")
    (collection_id,) = db.execute("SELECT id FROM collections").fetchone()
    counts = {
        "documents": db.execute("SELECT count(*) FROM documents").fetchone()[0],
        "distinct_external_ids": db.execute("SELECT count(DISTINCT external_id) FROM documents").fetchone()[0],
        "chunks": db.execute("SELECT count(*) FROM chunks").fetchone()[0],
        "distinct_chunk_positions": db.execute(
            "SELECT count(*) FROM (SELECT DISTINCT document_id, ordinal FROM chunks)"
        ).fetchone()[0],
        "keyword_index_rows": db.execute(f"SELECT count(*) FROM {fts_table(collection_id)}").fetchone()[0],
        "unfinished_items": db.execute("SELECT count(*) FROM job_items WHERE status != 'done'").fetchone()[0],
    }
    db.close()
    store_db = SqliteDatabase(data_dir / "ragserve.sqlite3")
    store = SqliteStore(store_db, IndexConfig(200, 40, embedder.model_id))
    index = HnswVectorIndex(data_dir / "index", embedder.dimension, VectorIndexSettings())
    (collection,) = store.list_collections()
    added, _ = index.catch_up(collection.id, store)
    counts["vector_index_ids"] = len(index.ids(collection.id))
    store_db.close()
    report["clean_run_chunks"] = expected
    report["counts"] = counts
    report["vector_index_missing_after_restart"] = added
    checks = {
        "all_jobs_succeeded": report["job_statuses"] == ["succeeded"],
        "documents_equal_clean_run": counts["documents"] == counts["distinct_external_ids"] == len(corpus),
        "chunks_equal_clean_run": counts["chunks"] == counts["distinct_chunk_positions"] == expected,
        "keyword_index_complete": counts["keyword_index_rows"] == expected,
        "vector_index_complete": counts["vector_index_ids"] == expected and added == 0,
        "no_unfinished_items": counts["unfinished_items"] == 0,
    }
    report["checks"] = checks
    print(json.dumps(report, indent=2))
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
