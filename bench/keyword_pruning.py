"""A prototype of MaxScore pruning for the in-memory BM25 accelerator, against its full scoring.

    python bench/keyword_pruning.py --data-dir DIR/sqlite-1000000 [--queries 300] [--k 100]

The accelerator (``stores/sparse_bm25.py``) scores every posting of every query term. MaxScore sorts the terms
by an upper bound of their score (idf times the best tf/length factor any of their postings reaches), scores
the high-bound ("essential") terms fully, and reads the postings of the low-bound ones only for the candidates
the essential terms found, once the low bounds together fall below the k-th best partial score. The answer is
exactly the same top k (checked here per question). Not in the product: this measures whether it would pay.
Prints JSON; ``--out`` saves it.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scale_corpus import held_out_questions

from ragserve.stores.analyzer import analyze
from ragserve.stores.sparse_bm25 import K1, Bm25Snapshot, read_snapshot

DATASETS = Path("/work/shared/datasets")
Span = tuple[int, int, float, float]  # postings start, end, idf, score bound


class Pruned:
    """MaxScore over a snapshot's postings (which are in row order within each term)."""

    def __init__(self, snapshot: Bm25Snapshot, title_weight: float) -> None:
        self.s = snapshot
        self.title_weight = title_weight
        offsets = snapshot.offsets
        nonempty = offsets[:-1] < offsets[1:]
        starts = offsets[:-1][nonempty]
        self.max_freq = np.zeros(len(offsets) - 1)
        self.min_norm = np.zeros(len(offsets) - 1)
        freq = snapshot.title_tf * title_weight + snapshot.body_tf
        self.max_freq[nonempty] = np.maximum.reduceat(freq, starts)
        self.min_norm[nonempty] = np.minimum.reduceat(snapshot.length_norm[snapshot.rows], starts)

    def _contribution(self, lo: int, hi: int, idf: float, at: Any = None) -> Any:
        s = self.s
        index = slice(lo, hi) if at is None else at
        freq = s.title_tf[index] * self.title_weight + s.body_tf[index]
        return idf * (freq * (K1 + 1.0)) / (freq + s.length_norm[s.rows[index]])

    def search(self, terms: Sequence[str], k: int) -> tuple[list[tuple[int, float]] | None, bool]:
        """The top k, and whether pruning was used (else the full scoring answered)."""
        s, n = self.s, self.s.row_count
        spans: list[Span] = []
        for term in sorted(set(terms)):
            tid = s._term_id(term)
            if tid is None:
                return None, False
            if tid < 0:
                continue
            lo, hi = int(s.offsets[tid]), int(s.offsets[tid + 1])
            idf = max(math.log((n - (hi - lo) + 0.5) / ((hi - lo) + 0.5)), 0.0) or 1e-6
            f = self.max_freq[tid]
            spans.append((lo, hi, idf, idf * f * (K1 + 1.0) / (f + self.min_norm[tid])))
        candidates = self._candidates(spans, k)
        if candidates is None:
            return s.search(terms, k, self.title_weight), False
        return self._score(spans, candidates[0], candidates[1], k), True

    def _candidates(self, spans: list[Span], k: int) -> tuple[Any, set[int]] | None:
        """Rows any essential term holds, and the essential terms; None when pruning would not pay."""
        order = sorted(range(len(spans)), key=lambda i: -spans[i][3])
        total = sum(hi - lo for lo, hi, _, _ in spans)
        rest = sum(span[3] for span in spans)
        essential: list[int] = []
        read = checked = 0
        for i in order[:-1]:
            lo, hi, _, bound = spans[i]
            essential.append(i)
            rest -= bound
            read += hi - lo
            if read * 2 > total:
                return None
            if read < k or read < 2 * checked:
                continue
            checked = read
            rows = np.concatenate([self.s.rows[spans[j][0] : spans[j][1]] for j in essential])
            partial = np.concatenate([self._contribution(*spans[j][:3]) for j in essential])
            unique, inverse = np.unique(rows, return_inverse=True)
            if unique.shape[0] < k:
                continue
            sums = np.bincount(inverse, weights=partial)
            theta = np.partition(sums, unique.shape[0] - k)[unique.shape[0] - k] * (1 - 1e-9)
            if rest < theta:
                return unique, set(essential)
        return None

    def _score(self, spans: list[Span], rows: Any, essential: set[int], k: int) -> list[tuple[int, float]]:
        """Exact scores of the candidate rows, terms added in the same order as the full scoring."""
        s = self.s
        scores = np.zeros(rows.shape[0])
        for j, (lo, hi, idf, _) in enumerate(spans):
            postings = s.rows[lo:hi]
            if j in essential:
                scores[np.searchsorted(rows, postings)] += self._contribution(lo, hi, idf)
            else:
                at = np.searchsorted(postings, rows)
                at[at >= postings.shape[0]] = 0
                held = postings[at] == rows
                scores[held] += self._contribution(lo, hi, idf, at[held] + lo)
        kept = np.arange(rows.shape[0])
        if kept.shape[0] > k:
            kth = np.partition(scores, kept.shape[0] - k)[kept.shape[0] - k]
            kept = kept[scores >= kth]
        best = kept[np.lexsort((rows[kept], -scores[kept]))[:k]]
        return list(zip(s.rowids[rows[best]].tolist(), scores[best].tolist(), strict=True))


def _percentiles(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(values), 2), "p95_ms": round(float(np.percentile(values, 95)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="a data dir built by scale.py (sqlite)")
    parser.add_argument("--collection", default="scale")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    conn = sqlite3.connect(args.data_dir / "ragserve.sqlite3", isolation_level=None)
    (index_id,) = conn.execute("SELECT active_index FROM collections WHERE name = ?", (args.collection,)).fetchone()
    started = time.perf_counter()
    snapshot = read_snapshot(conn, str(index_id), 0)
    build_seconds = time.perf_counter() - started
    pruned = Pruned(snapshot, 1.0)
    full_ms: list[float] = []
    pruned_ms: list[float] = []
    postings: list[int] = []
    used = differing = 0
    for question in held_out_questions(DATASETS, args.queries, args.seed):
        terms = analyze(question)
        started = time.perf_counter()
        full = snapshot.search(terms, args.k, 1.0)
        full_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        fast, was_pruned = pruned.search(terms, args.k)
        pruned_ms.append((time.perf_counter() - started) * 1000)
        used += was_pruned
        differing += fast != full
        ids = [snapshot._term_id(t) for t in set(terms)]
        postings.append(
            sum(int(snapshot.offsets[i + 1] - snapshot.offsets[i]) for i in ids if i is not None and i >= 0)
        )
    report = {
        "data_dir": str(args.data_dir),
        "chunks": snapshot.row_count,
        "snapshot_build_seconds": round(build_seconds, 1),
        "queries": len(full_ms),
        "k": args.k,
        "postings_per_query": {"p50": int(statistics.median(postings)), "p95": int(np.percentile(postings, 95))},
        "answers_differing": differing,
        "pruning_used": used,
        "full_scoring": _percentiles(full_ms),
        "maxscore_with_fallback": _percentiles(pruned_ms),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
