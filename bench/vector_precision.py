"""The embedded vector index at each precision (``f32``, ``f16``, ``int8``, ``binary``): bytes per chunk, nDCG@10
of dense and hybrid search through ``ragserve eval``'s code path (``cli._evaluate``), and the latency of the
index's own dense search.

    python bench/vector_precision.py DATASET --data-dir DIR [--scale N [--scale-only]] [--out results.json]

``DIR`` is a data directory into which ``ragserve eval DATASET`` ingested the dataset (its collection named after
the dataset's folder). The script WRITES to it: run it on a copy. For each precision it sets the precision of the
collection's active index version in the database (the chunks and their stored float32 vectors stay as they
are), deletes the saved index files and opens the service, whose catch-up rebuilds the index from the stored
vectors; at the end the version is set back to f32. Every precision thus indexes the very same vectors.

Bytes per chunk: the saved index file (the HNSW graph at f32; the codes, scales and ids otherwise), and for the
code tables the bytes they hold in memory. The float32 vectors in the database (1,536 bytes per chunk at 384
dimensions) are there at every precision: they are the source of truth, not part of the index.

Latency: ``index.search`` alone, k = 100 (``retrieval.candidates``), with query vectors embedded beforehand.
``--scale N`` repeats the latency run on N vectors (the dataset's own, tiled with small noise), built in a
temporary directory, to show how the scans grow with a collection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragserve.cli import _evaluate
from ragserve.domain import VectorPrecision
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.evaluation import percentile, read_queries
from ragserve.service import RagService
from ragserve.settings import Settings, VectorIndexSettings
from ragserve.stores.hnsw import HnswVectorIndex, index_path
from ragserve.stores.protocol import Vectors

PRECISIONS: tuple[VectorPrecision, ...] = ("f32", "f16", "int8", "binary")
K = 100


def _set_precision(database: Path, index_id: str, precision: VectorPrecision, index_dir: Path) -> None:
    with sqlite3.connect(database) as conn:
        (text,) = conn.execute("SELECT config FROM index_versions WHERE index_id = ?", (index_id,)).fetchone()
        config = json.loads(text)
        config["precision"] = precision
        conn.execute(
            "UPDATE index_versions SET config = ? WHERE index_id = ?", (json.dumps(config, sort_keys=True), index_id)
        )
    for each in PRECISIONS:
        index_path(index_dir, index_id, each).unlink(missing_ok=True)


def _active_index(database: Path, collection: str) -> str:
    with sqlite3.connect(database) as conn:
        row = conn.execute("SELECT active_index FROM collections WHERE name = ?", (collection,)).fetchone()
    if row is None:
        raise SystemExit(f"no collection {collection!r} in {database}: ingest it with `ragserve eval` first")
    return str(row[0])


def _latency(index: HnswVectorIndex, index_id: str, queries: Vectors) -> tuple[dict[str, float], list[list[int]]]:
    for q in queries[:20]:  # warm-up: page in the codes / graph
        index.search(index_id, q, K)
    times: list[float] = []
    found: list[list[int]] = []
    for q in queries:
        start = time.perf_counter()
        hits = index.search(index_id, q, K)
        times.append((time.perf_counter() - start) * 1000)
        found.append([cid for cid, _ in hits])
    stats = {"p50_ms": round(percentile(times, 50), 2), "p95_ms": round(percentile(times, 95), 2)}
    return stats, found


def _overlap_at_10(found: list[list[int]], reference: list[list[int]]) -> float:
    shared = [len(set(a[:10]) & set(b[:10])) / max(len(b[:10]), 1) for a, b in zip(found, reference, strict=True)]
    return round(sum(shared) / len(shared), 4)


async def _run_precision(
    settings: Settings, embedder: OnnxEmbedder, dataset: Path, name: str, index_id: str, queries: Vectors
) -> tuple[dict[str, Any], list[list[int]]]:
    service = RagService.open(settings, embedder)
    try:
        start = time.perf_counter()
        await service.start(run_jobs=False)  # catch-up builds the index from the stored vectors
        build_seconds = time.perf_counter() - start
        index = service.index
        assert isinstance(index, HnswVectorIndex)
        index.flush()
        chunks = len(index.ids(index_id))
        result: dict[str, Any] = {
            "chunks": chunks,
            "build_seconds": round(build_seconds, 1),
            "index_file_bytes_per_chunk": round(index.index_bytes(index_id) / max(chunks, 1), 1),
        }
        memory = index.memory_bytes(index_id)
        if memory is not None:
            result["codes_memory_bytes_per_chunk"] = round(memory / max(chunks, 1), 1)
        report = await _evaluate(service, dataset, "test", ["dense", "hybrid"], name)
        result["ndcg@10"] = {mode: r["ndcg@10"] for mode, r in report["modes"].items()}
        result["recall@100"] = {mode: r["recall@100"] for mode, r in report["modes"].items()}
        result["eval_latency_ms_p50"] = {mode: r["latency_ms_p50"] for mode, r in report["modes"].items()}
        result["index_search_k100"], found = _latency(index, index_id, queries)
        return result, found
    finally:
        await service.close()


def _scaled(vectors: Vectors, n: int, seed: int = 7) -> Vectors:
    rng = np.random.default_rng(seed)
    rows = vectors[rng.integers(0, len(vectors), n)] + rng.normal(0, 0.02, (n, vectors.shape[1])).astype(np.float32)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _scale_run(vectors: Vectors, queries: Vectors, n: int) -> dict[str, Any]:
    """Index-only latency on ``n`` vectors at each precision (rescoring from an in-memory array)."""
    data = _scaled(vectors, n)
    ids = list(range(1, n + 1))

    def full(chosen: Sequence[int]) -> Vectors:
        return data[np.asarray(chosen, dtype=np.int64) - 1]

    out: dict[str, Any] = {"vectors": n}
    reference: list[list[int]] | None = None
    for precision in PRECISIONS:
        workdir = Path(tempfile.mkdtemp(prefix="ragserve-precision-"))
        try:
            index = HnswVectorIndex(workdir, data.shape[1], VectorIndexSettings(precision=precision), full_vectors=full)
            start = time.perf_counter()
            for i in range(0, n, 4096):
                index.upsert("scale", ids[i : i + 4096], data[i : i + 4096])
            build = time.perf_counter() - start
            stats, found = _latency(index, "scale", queries)
            reference = reference or found
            overlap = _overlap_at_10(found, reference)
            out[precision] = {**stats, "build_seconds": round(build, 1), "overlap@10_vs_f32": overlap}
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True, help="a COPY of an eval data directory")
    parser.add_argument("--scale", type=int, default=0, help="also time the index alone on this many vectors")
    parser.add_argument("--scale-only", action="store_true", help="only that: no evaluation (DIR is only read)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    settings = Settings(data_dir=args.data_dir, jobs={"workers": 1})  # type: ignore[arg-type]
    name = args.dataset.resolve().name
    index_id = _active_index(settings.database_path, name)
    embedder = OnnxEmbedder(cache_dir=settings.model_cache_dir)
    texts, _ = read_queries(args.dataset, "test")
    queries = embedder.embed(list(texts.values()), kind="query")
    result: dict[str, Any] = {"dataset": name, "queries": len(queries), "precisions": {}}
    reference: list[list[int]] | None = None
    try:
        for precision in () if args.scale_only else PRECISIONS:
            _set_precision(settings.database_path, index_id, precision, settings.index_dir)
            report, found = asyncio.run(_run_precision(settings, embedder, args.dataset, name, index_id, queries))
            reference = reference or found
            report["overlap@10_vs_f32"] = _overlap_at_10(found, reference)
            result["precisions"][precision] = report
            print(json.dumps({precision: report}), flush=True)
    finally:
        if not args.scale_only:
            _set_precision(settings.database_path, index_id, "f32", settings.index_dir)
    if args.scale:
        with sqlite3.connect(settings.database_path) as conn:
            blobs = conn.execute("SELECT vector FROM chunks WHERE collection_id = ?", (index_id,)).fetchall()
        stored = np.stack([np.frombuffer(b, dtype=np.float32) for (b,) in blobs])
        result["scale"] = _scale_run(stored, queries, args.scale)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
