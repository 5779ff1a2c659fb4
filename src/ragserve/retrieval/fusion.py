"""Fusing the keyword and dense result lists into one ranking.

``zscore_fusion`` standardises each list's scores (so BM25's unbounded scores and cosine similarities become
comparable) and blends them with weight ``alpha`` on the dense side; a candidate missing from one list gets
that list's lowest standardised score. ``rrf_fusion`` is reciprocal rank fusion, which ignores scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Scored = list[tuple[int, float]]


def _standardised(results: Sequence[tuple[int, float]]) -> dict[int, float]:
    if not results:
        return {}
    scores = np.array([s for _, s in results], dtype=np.float64)
    std = float(scores.std())
    mean = float(scores.mean())
    if std < 1e-12:
        return {cid: 0.0 for cid, _ in results}
    return {cid: (s - mean) / std for cid, s in results}


def zscore_fusion(dense: Sequence[tuple[int, float]], keyword: Sequence[tuple[int, float]], alpha: float) -> Scored:
    """Blend ``alpha * z(dense) + (1 - alpha) * z(keyword)``, best first."""
    zd, zk = _standardised(dense), _standardised(keyword)
    floor_d = min(zd.values(), default=0.0)
    floor_k = min(zk.values(), default=0.0)
    fused = {cid: alpha * zd.get(cid, floor_d) + (1.0 - alpha) * zk.get(cid, floor_k) for cid in zd.keys() | zk.keys()}
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def rrf_fusion(lists: Sequence[Sequence[tuple[int, float]]], k: int = 60) -> Scored:
    """Reciprocal rank fusion: each list adds ``1 / (k + rank)`` for every id it holds."""
    fused: dict[int, float] = {}
    for results in lists:
        for rank, (cid, _) in enumerate(results, start=1):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))
