"""Fusion, text analysis and evaluation metrics: pure logic."""

from __future__ import annotations

import pytest

from ragserve.evaluation import mrr_at, ndcg_at, percentile, recall_at
from ragserve.retrieval.fusion import best_per_document, document_fusion, rrf_fusion, zscore_fusion
from ragserve.retrieval.rerank import rerank
from ragserve.stores.analyzer import analyze


def test_analyze_stems_lowercases_and_drops_stop_words() -> None:
    assert analyze("The Runners were running to the RUNNING track") == ["runner", "run", "run", "track"]
    assert analyze("the of and") == []
    assert analyze("Café naïve e-mail") == ["café", "naïv", "e", "mail"]


def test_zscore_fusion_rewards_agreement_and_respects_alpha() -> None:
    dense = [(1, 0.9), (2, 0.8), (3, 0.1)]
    keyword = [(2, 12.0), (4, 11.0), (1, 1.0)]
    fused = [cid for cid, _ in zscore_fusion(dense, keyword, alpha=0.5)]
    assert fused[0] == 2  # high in both lists
    assert set(fused) == {1, 2, 3, 4}
    assert [cid for cid, _ in zscore_fusion(dense, keyword, alpha=1.0)][:2] == [1, 2]
    assert [cid for cid, _ in zscore_fusion(dense, keyword, alpha=0.0)][:2] == [2, 4]


def test_zscore_fusion_handles_empty_and_constant_lists() -> None:
    assert zscore_fusion([], [], 0.5) == []
    assert [c for c, _ in zscore_fusion([(1, 0.5)], [], 0.5)] == [1]
    assert [c for c, _ in zscore_fusion([(1, 0.5), (2, 0.5)], [(2, 3.0), (1, 1.0)], 0.5)] == [2, 1]


def test_best_per_document_keeps_each_documents_best_chunk() -> None:
    document_of = {1: "a", 2: "a", 3: "b"}
    assert sorted(best_per_document([(1, 0.2), (2, 0.7), (3, 0.5), (9, 0.9)], document_of)) == [("a", 0.7), ("b", 0.5)]


def test_document_fusion_joins_two_half_matches_of_one_document() -> None:
    # Document "a" matches the words in chunk 1 and the meaning in chunk 2; document "b"'s chunk 3 is second in
    # both lists. Chunk-level fusion ranks chunk 3 first; at document level "a" holds the best of both halves.
    document_of = {1: "a", 2: "a", 3: "b", 4: "c", 5: "d"}
    dense = [(2, 0.9), (3, 0.8), (4, 0.3), (5, 0.2)]
    keyword = [(1, 12.0), (3, 11.0), (5, 2.0), (4, 1.0)]
    assert zscore_fusion(dense, keyword, 0.5)[0][0] == 3
    fused = document_fusion(dense, keyword, document_of, alpha=0.5, weight=1.0)
    assert [document_of[cid] for cid, _ in fused[:2]] == ["a", "a"]
    assert {cid for cid, _ in fused} == {1, 2, 3, 4, 5}
    # Weight 0 is chunk-level fusion; unknown documents' chunks are left out.
    chunk_level = document_fusion(dense, keyword, document_of, alpha=0.5, weight=0.0)
    assert chunk_level == [item for item in zscore_fusion(dense, keyword, 0.5)]
    assert {cid for cid, _ in document_fusion(dense, keyword, {1: "a", 2: "a"}, 0.5, 0.5)} == {1, 2}


def test_rrf_fusion_sums_reciprocal_ranks() -> None:
    fused = rrf_fusion([[(1, 0.0), (2, 0.0)], [(2, 0.0), (3, 0.0)]], k=60)
    assert [c for c, _ in fused] == [2, 1, 3]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_metrics_match_hand_computed_values() -> None:
    relevant = {"a": 1, "b": 2}
    assert ndcg_at(["b", "a", "x"], relevant) == pytest.approx(1.0)
    assert ndcg_at(["x", "a"], relevant) == pytest.approx((1 / 1.5849625) / (3 + 1 / 1.5849625))
    assert ndcg_at(["x"], {}) == 0.0
    assert recall_at(["a", "x"], relevant) == 0.5
    assert mrr_at(["x", "y", "b"], relevant) == pytest.approx(1 / 3)
    assert mrr_at(["x"], relevant) == 0.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == 4.0


def test_rerank_reorders_the_head_and_keeps_the_tail_below_it() -> None:
    ranking = [(1, 3.0), (2, 2.0), (3, 1.0), (4, 0.5)]
    reranked = rerank(ranking, {1: "a", 2: "b", 3: "c"}, [0.1, 0.9, 0.5])
    assert [cid for cid, _ in reranked] == [2, 3, 1, 4]
    assert reranked[0][1] == 0.9
    assert reranked[3][1] < 0.1
    # A chunk the caller may not read (no text) is not sent, and keeps its fused place behind the head.
    assert [cid for cid, _ in rerank(ranking, {1: "a", 3: "c"}, [0.2, 0.8])] == [3, 1, 2, 4]
    with pytest.raises(ValueError, match="one reranker score per reranked chunk"):
        rerank(ranking, {1: "a"}, [0.1, 0.2])
