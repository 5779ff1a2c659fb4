"""Which fusion wins? Scores ranking variants on a dataset already ingested in a data directory.

Parameters are chosen on the tuning split (train or dev) and reported on test, so no test query tunes anything.

    RAGSERVE_DATA_DIR=/tmp/evalrun/data python bench/fusion_study.py ../shared/datasets/scifact --tune train

Reads the store directly (it takes no lock, and it never writes). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ragserve.domain import IndexConfig, SearchFilters
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.evaluation import ndcg_at, read_queries
from ragserve.retrieval.fusion import Scored, document_fusion, rrf_fusion, zscore_fusion
from ragserve.settings import Settings
from ragserve.stores.analyzer import analyze
from ragserve.stores.hnsw import HnswVectorIndex
from ragserve.stores.sqlite import SqliteStore
from ragserve.stores.sqlite_db import SqliteDatabase

CANDIDATES = 300


class Halves:
    """Both halves' candidate lists per query, computed once, plus the chunk → document map."""

    def __init__(self, store: SqliteStore, index: HnswVectorIndex, embedder: OnnxEmbedder, collection_id: str) -> None:
        self.store, self.index, self.embedder, self.cid = store, index, embedder, collection_id

    def lists(self, text: str, vector: np.ndarray) -> tuple[Scored, Scored]:
        keyword = self.store.keyword_search(self.cid, analyze(text), CANDIDATES, SearchFilters())
        dense = self.index.search(self.cid, vector, CANDIDATES)
        return dense, keyword


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--tune", default="train")
    parser.add_argument("--collection", default=None)
    args = parser.parse_args()
    settings = Settings()
    db = SqliteDatabase(settings.database_path)
    embedder = OnnxEmbedder(cache_dir=settings.model_cache_dir)
    store = SqliteStore(
        db, IndexConfig(settings.chunking.max_tokens, settings.chunking.overlap_tokens, embedder.model_id)
    )
    index = HnswVectorIndex(settings.index_dir, embedder.dimension, settings.vector_index)
    collection = store.get_collection(args.collection or args.dataset.resolve().name)
    halves = Halves(store, index, embedder, collection.id)

    ext_rows = db.fetchall(
        "SELECT c.id, coalesce(d.external_id, d.id) FROM chunks c JOIN documents d ON d.id = c.document_id "
        "WHERE c.collection_id = ?",
        (collection.id,),
    )
    doc_of = {int(cid): str(ext) for cid, ext in ext_rows}

    splits: dict[str, Any] = {}
    for split in (args.tune, "test"):
        queries, qrels = read_queries(args.dataset, split)
        ids = list(queries)
        vectors = embedder.embed([queries[q] for q in ids], kind="query")
        splits[split] = [
            (qid, qrels[qid], *halves.lists(queries[qid], vectors[i]), vectors[i]) for i, qid in enumerate(ids)
        ]

    def ranked(scored: Scored) -> list[str]:
        seen: dict[str, None] = {}
        for cid, _ in scored:
            seen.setdefault(doc_of[cid], None)
        return list(seen)

    def mean_ndcg(split: str, fuse: Callable[[Scored, Scored, np.ndarray], Scored]) -> float:
        rows = splits[split]
        return float(np.mean([ndcg_at(ranked(fuse(d, k, v)), rel) for _, rel, d, k, v in rows]))

    def doc_zscore(alpha: float) -> Callable[[Scored, Scored, np.ndarray], Scored]:
        def fuse(dense: Scored, keyword: Scored, _: np.ndarray) -> Scored:
            # Fuse at document level: each half's best chunk per document, then the z-score blend.
            def best(scored: Scored) -> Scored:
                top: dict[int, float] = {}
                first: dict[str, int] = {}
                for cid, score in scored:
                    doc = doc_of[cid]
                    if doc not in first:
                        first[doc] = cid
                        top[cid] = score
                return list(top.items())

            d, k = best(dense), best(keyword)
            # Map each document to one representative chunk id so both halves share ids.
            rep: dict[str, int] = {}
            for cid, _ in d + k:
                rep.setdefault(doc_of[cid], cid)
            d = [(rep[doc_of[c]], s) for c, s in d]
            k = [(rep[doc_of[c]], s) for c, s in k]
            return zscore_fusion(d, k, alpha)

        return fuse

    variants: dict[str, Callable[[float], Callable[[Scored, Scored, np.ndarray], Scored]]] = {
        "zscore_chunk": lambda a: lambda d, k, v: zscore_fusion(d, k, a),
        "zscore_doc": doc_zscore,
        "rrf": lambda kk: lambda d, k, v: rrf_fusion([d, k], int(kk)),
    }
    grids = {
        "zscore_chunk": [round(x, 2) for x in np.arange(0.2, 0.85, 0.05)],
        "zscore_doc": [round(x, 2) for x in np.arange(0.2, 0.85, 0.05)],
        "rrf": [10, 20, 40, 60, 100],
    }

    def rocchio(beta: float, alpha: float = 0.5, feedback: int = 3) -> Callable[[Scored, Scored, np.ndarray], Scored]:
        """Dense pseudo-relevance feedback: move the query toward the top hybrid chunks, search again, fuse."""

        def fuse(dense: Scored, keyword: Scored, vector: np.ndarray) -> Scored:
            first = zscore_fusion(dense, keyword, alpha)[:feedback]
            centroid = store.chunk_vectors([cid for cid, _ in first]).mean(axis=0)
            moved = vector + beta * centroid
            moved = moved / np.linalg.norm(moved)
            dense2 = index.search(collection.id, moved.astype(np.float32), CANDIDATES)
            return zscore_fusion(dense2, keyword, alpha)

        return fuse

    variants["rocchio_beta"] = rocchio
    grids["rocchio_beta"] = [0.25, 0.5, 1.0]
    # The service's fusion (retrieval/fusion.py): (alpha, document_weight); weight 0 is chunk-level z-score.
    variants["document_fusion"] = lambda p: lambda d, k, v: document_fusion(d, k, doc_of, p[0], p[1])
    grids["document_fusion"] = [(a, w) for a in (0.4, 0.45, 0.5, 0.55, 0.6) for w in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)]
    defaults: dict[str, Any] = {"zscore_chunk": 0.5, "zscore_doc": 0.5, "rrf": 60, "document_fusion": (0.5, 0.5)}
    report: dict[str, Any] = {
        "dataset": args.dataset.name,
        "tuned_on": args.tune,
        "keyword_test": mean_ndcg("test", lambda d, k, v: k),
        "dense_test": mean_ndcg("test", lambda d, k, v: d),
        "variants": {},
    }
    for name, make in variants.items():
        tuned = {p: mean_ndcg(args.tune, make(p)) for p in grids[name]}
        best = max(tuned, key=lambda p: tuned[p])
        report["variants"][name] = {
            "best_param": best,
            "tune_ndcg": round(tuned[best], 4),
            "test_ndcg": round(mean_ndcg("test", make(best)), 4),
            "default_param": defaults.get(name),
            "test_ndcg_at_default": round(mean_ndcg("test", make(defaults[name])), 4) if name in defaults else None,
            "tune_grid": {str(p): round(v, 4) for p, v in tuned.items()},
        }
    print(json.dumps(report, indent=2))
    db.close()


if __name__ == "__main__":
    main()
