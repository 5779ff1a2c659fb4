"""``kill -9`` the server in the middle of ingestion, restart it: the job finishes, and documents and chunks
equal a clean run's, with no duplicates in the chunk table, the keyword index or the vector index."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import httpx

from ragserve.domain import DocumentInput, IndexConfig
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.ingest.chunking import chunk_document
from ragserve.ingest.pipeline import parse_input
from ragserve.settings import Settings, VectorIndexSettings
from ragserve.stores.hnsw import HnswVectorIndex
from ragserve.stores.sqlite import SqliteStore
from ragserve.stores.sqlite_db import SqliteDatabase, fts_table
from tests.conftest import FIXTURES
from tests.integration.server import free_port, start_server


def _expected_chunks(corpus: list[dict[str, str]], embedder: OnnxEmbedder) -> int:
    """What a clean run writes: the chunker is deterministic, so count its output without embedding."""
    chunking = Settings().chunking
    total = 0
    for doc in corpus:
        parsed = parse_input(DocumentInput(collection="c", title=doc["title"], text=doc["text"]))
        total += len(
            chunk_document(
                parsed, embedder.count_tokens, max_tokens=chunking.max_tokens, overlap_tokens=chunking.overlap_tokens
            )
        )
    return total


def test_kill_9_mid_ingestion_then_restart(tmp_path: Path, model_cache: Path, embedder: OnnxEmbedder) -> None:
    corpus = [json.loads(line) for line in (FIXTURES / "scifact_slice" / "corpus.jsonl").read_text().splitlines()]
    docs = [{"external_id": d["_id"], "title": d["title"], "text": d["text"]} for d in corpus]
    data_dir, port, log = tmp_path / "data", free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"

    server = start_server(data_dir, port, model_cache, log)
    try:
        job_ids = []
        for i in range(0, len(docs), 100):
            response = httpx.post(f"{base}/v1/documents", json={"documents": docs[i : i + 100]}, timeout=30)
            assert response.status_code == 202
            job_ids.append(response.json()["job_id"])
        deadline = time.monotonic() + 120
        while httpx.get(f"{base}/v1/jobs/{job_ids[0]}").json()["progress"]["done"] < 10:
            assert time.monotonic() < deadline, "ingestion made no progress"
            time.sleep(0.05)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()

    server = start_server(data_dir, port, model_cache, log)
    try:
        deadline = time.monotonic() + 300
        for job_id in job_ids:
            while (job := httpx.get(f"{base}/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
                assert time.monotonic() < deadline, "the job did not finish after the restart"
                time.sleep(0.1)
            assert job["status"] == "succeeded", job["errors"]
        listing = httpx.get(f"{base}/v1/documents", params={"limit": 1000}).json()
        hits = httpx.post(f"{base}/v1/search", json={"query": corpus[0]["title"], "mode": "dense"}).json()
    finally:
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status names it.
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)

    expected = _expected_chunks(corpus, embedder)
    assert listing["total"] == len(corpus)
    assert sum(d["chunk_count"] for d in listing["documents"]) == expected
    assert hits["results"][0]["external_id"] == corpus[0]["_id"]

    db = sqlite3.connect(data_dir / "ragserve.sqlite3")
    try:
        assert db.execute("SELECT count(*) FROM documents").fetchone()[0] == len(corpus)
        assert db.execute("SELECT count(DISTINCT external_id) FROM documents").fetchone()[0] == len(corpus)
        assert db.execute("SELECT count(*) FROM chunks").fetchone()[0] == expected
        assert (
            db.execute("SELECT count(*) FROM (SELECT DISTINCT document_id, ordinal FROM chunks)").fetchone()[0]
            == expected
        )
        (collection_id,) = db.execute("SELECT id FROM collections").fetchone()
        assert db.execute(f"SELECT count(*) FROM {fts_table(collection_id)}").fetchone()[0] == expected
        assert db.execute("SELECT count(*) FROM job_items WHERE status != 'done'").fetchone()[0] == 0
    finally:
        db.close()

    # The saved vector index holds every chunk exactly once: catching it up finds nothing to add.
    store_db = SqliteDatabase(data_dir / "ragserve.sqlite3")
    store = SqliteStore(store_db, IndexConfig(200, 40, embedder.model_id))
    index = HnswVectorIndex(data_dir / "index", embedder.dimension, VectorIndexSettings())
    (collection,) = store.list_collections()
    added, _ = index.catch_up(collection.id, store)
    assert added == 0
    assert len(index.ids(collection.id)) == expected
    store_db.close()
