"""The embedded store's keyword half, FTS5 against the in-memory BM25 accelerator, on a built data directory.

    python bench/keyword_accelerator.py --data-dir /tmp/ragserve-scale/sqlite-100000 [--queries 500]

For real held-out questions (``scale_corpus.held_out_questions``, as ``scale.py`` asks them) it times, one query
at a time, what the hybrid search's keyword half asks of the store: ``keyword_search`` for the query's terms,
then, as keyword feedback does (``retrieval/search.py``), ``term_chunk_counts`` and ``keyword_search`` for the
expansion terms of the best chunks. The same calls run on FTS5 and on the accelerator; every answer is checked
to be the same. Also the snapshot's build time and bytes per chunk. Prints JSON; ``--out`` saves it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Any

from scale_corpus import held_out_questions

from ragserve.domain import IndexConfig, SearchFilters
from ragserve.retrieval.feedback import expansion_terms, within_budget
from ragserve.settings import RetrievalSettings
from ragserve.stores.analyzer import analyze
from ragserve.stores.keyword_accelerator import KeywordAccelerator
from ragserve.stores.sparse_bm25 import read_snapshot
from ragserve.stores.sqlite import SqliteStore
from ragserve.stores.sqlite_db import SqliteDatabase

DATASETS = Path("/work/shared/datasets")
NOTHING = SearchFilters()


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 3),
        "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 3),
        "mean_ms": round(1000 * statistics.fmean(ordered), 3),
    }


def _keyword_half(store: SqliteStore, index_id: str, terms: list[str], settings: RetrievalSettings) -> Any:
    """The keyword half's store calls for one query, feedback included (``Retriever._with_feedback``)."""
    k = settings.candidates
    first = store.keyword_search(index_id, terms, k, NOTHING)
    top = store.hits(first[: settings.feedback_chunks])
    feedback = [(analyze(f"{hit.title or ''}\n{hit.section or ''}\n{hit.text}"), hit.score) for hit in top]
    extra = expansion_terms(feedback, set(terms), settings.feedback_terms)
    counts = store.term_chunk_counts(index_id, extra) if extra else {}
    extra = within_budget(extra, counts, settings.feedback_max_postings)
    second = store.keyword_search(index_id, extra, k, NOTHING) if extra else []
    return first, counts, second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="a data dir built by scale.py (sqlite)")
    parser.add_argument("--collection", default="scale")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    db = SqliteDatabase(args.data_dir / "ragserve.sqlite3")
    config = IndexConfig(max_tokens=256, overlap_tokens=32, model="unused")  # only for new collections
    settings = RetrievalSettings()
    fts5 = SqliteStore(db, config, settings.title_weight)
    index_id = fts5.get_collection(args.collection).id
    started = time.perf_counter()
    with db.reading() as conn:
        snapshot = read_snapshot(conn, index_id, 0)
    build_seconds = time.perf_counter() - started
    tracemalloc.start()  # numpy reports its arrays to tracemalloc; a second build, traced, for its peak
    with db.reading() as conn:
        read_snapshot(conn, index_id, 0)
    build_peak_bytes = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    accelerator = KeywordAccelerator(db, max_chunks=10_000_000, quiet_seconds=0.0)
    fast = SqliteStore(db, config, settings.title_weight, accelerator)
    while accelerator.current(index_id) is None:
        time.sleep(0.05)

    questions = held_out_questions(DATASETS, args.queries, args.seed)
    timings: dict[str, dict[str, list[float]]] = {
        name: {"query": [], "keyword_half": []} for name in ("fts5", "accelerator")
    }
    differing = 0
    for question in questions:
        terms = analyze(question)
        answers = []
        for name, store in (("fts5", fts5), ("accelerator", fast)):
            t0 = time.perf_counter()
            store.keyword_search(index_id, terms, settings.candidates, NOTHING)
            t1 = time.perf_counter()
            answers.append(_keyword_half(store, index_id, terms, settings))
            t2 = time.perf_counter()
            timings[name]["query"].append(t1 - t0)
            timings[name]["keyword_half"].append(t2 - t1)
        differing += _differs(answers[0], answers[1])
    accelerator.close()
    db.close()
    result = {
        "data_dir": str(args.data_dir),
        "chunks": snapshot.row_count,
        "terms": len(snapshot.term_ids),
        "postings": int(snapshot.rows.shape[0]),
        "unsafe_terms": len(snapshot.unsafe),
        "snapshot_bytes": snapshot.nbytes,
        "snapshot_bytes_per_chunk": round(snapshot.nbytes / max(snapshot.row_count, 1), 1),
        "build_seconds": round(build_seconds, 2),
        "build_peak_traced_bytes": build_peak_bytes,
        "queries": len(questions),
        "answers_differing": differing,
        "load_average": os.getloadavg(),
        **{name: {part: _percentiles(values) for part, values in parts.items()} for name, parts in timings.items()},
    }
    for part in ("query", "keyword_half"):
        result[f"speedup_p50_{part}"] = round(
            result["fts5"][part]["p50_ms"] / max(result["accelerator"][part]["p50_ms"], 1e-6), 1
        )
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def _differs(exact: Any, fast: Any) -> bool:
    """Different ids, or scores more than 1e-9 apart relatively (ties at a cut-off may swap; counted too)."""
    (first_a, counts_a, second_a), (first_b, counts_b, second_b) = exact, fast
    if counts_a != counts_b:
        return True
    for a, b in ((first_a, first_b), (second_a, second_b)):
        if [c for c, _ in a] != [c for c, _ in b]:
            return True
        if any(abs(x - y) > 1e-9 * abs(x) for (_, x), (_, y) in zip(a, b, strict=True)):
            return True
    return False


if __name__ == "__main__":
    main()
