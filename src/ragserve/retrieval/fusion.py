"""Fusing the keyword and dense result lists into one ranking.

``zscore_fusion`` standardises each list's scores (so BM25's unbounded scores and cosine similarities become
comparable) and blends them with weight ``alpha`` on the dense side; a candidate missing from one list gets
that list's lowest standardised score. ``rrf_fusion`` is reciprocal rank fusion, which ignores scores.

``document_fusion`` adds the documents' view. A document whose title and abstract match the query words in
one chunk and its meaning in another is a strong match, but chunk-level fusion sees two half-matches. So each
half's best chunk per document (max-passage) is also fused at document level, and every chunk's score blends
its document's fused score with its own (NFCorpus test nDCG@10 0.3514 -> 0.36+, ``bench/README.md``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np

Scored = list[tuple[int, float]]
Key = TypeVar("Key", bound=Hashable)


def _standardised(results: Sequence[tuple[Key, float]]) -> dict[Key, float]:
    if not results:
        return {}
    scores = np.array([s for _, s in results], dtype=np.float64)
    std = float(scores.std())
    mean = float(scores.mean())
    if std < 1e-12:
        return {key: 0.0 for key, _ in results}
    return {key: (s - mean) / std for key, s in results}


def _zscore_blend(
    dense: Sequence[tuple[Key, float]], keyword: Sequence[tuple[Key, float]], alpha: float
) -> dict[Key, float]:
    zd, zk = _standardised(dense), _standardised(keyword)
    floor_d = min(zd.values(), default=0.0)
    floor_k = min(zk.values(), default=0.0)
    return {key: alpha * zd.get(key, floor_d) + (1.0 - alpha) * zk.get(key, floor_k) for key in zd.keys() | zk.keys()}


def _ranked(scores: Mapping[int, float]) -> Scored:
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def zscore_fusion(dense: Sequence[tuple[int, float]], keyword: Sequence[tuple[int, float]], alpha: float) -> Scored:
    """Blend ``alpha * z(dense) + (1 - alpha) * z(keyword)``, best first."""
    return _ranked(_zscore_blend(dense, keyword, alpha))


def best_per_document(results: Sequence[tuple[int, float]], document_of: Mapping[int, str]) -> list[tuple[str, float]]:
    """Each document's best chunk score in ``results`` (chunks of unknown documents are skipped)."""
    best: dict[str, float] = {}
    for cid, score in results:
        document = document_of.get(cid)
        if document is not None and score > best.get(document, -np.inf):
            best[document] = score
    return list(best.items())


def document_fusion(
    dense: Sequence[tuple[int, float]],
    keyword: Sequence[tuple[int, float]],
    document_of: Mapping[int, str],
    alpha: float,
    weight: float,
) -> Scored:
    """``weight`` times the z-score fusion of each half's best chunk per document, plus ``1 - weight`` times
    the chunk's own z-score fusion, best first. Chunks whose document is unknown (deleted meanwhile) are left
    out."""
    chunks = _zscore_blend(dense, keyword, alpha)
    documents = _zscore_blend(best_per_document(dense, document_of), best_per_document(keyword, document_of), alpha)
    return _ranked(
        {
            cid: weight * documents[document_of[cid]] + (1.0 - weight) * score
            for cid, score in chunks.items()
            if cid in document_of
        }
    )


def rrf_fusion(lists: Sequence[Sequence[tuple[int, float]]], k: int = 60) -> Scored:
    """Reciprocal rank fusion: each list adds ``1 / (k + rank)`` for every id it holds."""
    fused: dict[int, float] = {}
    for results in lists:
        for rank, (cid, _) in enumerate(results, start=1):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (k + rank)
    return _ranked(fused)
