"""Keyword pseudo-relevance feedback: the relevance model's expansion terms and the score mix."""

from __future__ import annotations

from ragserve.retrieval.feedback import add_feedback, expansion_terms, within_budget


def test_expansion_terms_skip_the_query_and_follow_the_best_chunks() -> None:
    feedback = [
        (["appl", "orchard", "orchard", "cider"], 5.0),
        (["appl", "banana"], 0.0),
    ]
    terms = expansion_terms(feedback, {"appl"}, 2)
    # "orchard" has half of the best chunk's mass; "banana" comes from a chunk e^5 times less weighted.
    assert terms == ["orchard", "cider"]
    assert "appl" not in expansion_terms(feedback, {"appl"}, 10)
    assert expansion_terms(feedback, {"appl"}, 10)[-1] == "banana"


def test_expansion_terms_ties_are_alphabetical_and_empty_input_gives_none() -> None:
    assert expansion_terms([(["zeta", "alpha"], 1.0)], set(), 1) == ["alpha"]
    assert expansion_terms([], {"x"}, 5) == []
    assert expansion_terms([([], 3.0)], set(), 5) == []
    assert expansion_terms([(["a"], 1.0)], set(), 0) == []


def test_add_feedback_adds_weighted_scores_and_keeps_the_best_k() -> None:
    first = [(1, 4.0), (2, 3.0)]
    second = [(3, 10.0), (2, 5.0)]
    mixed = add_feedback(first, second, 0.2, 3)
    assert [cid for cid, _ in mixed] == [1, 2, 3]  # equal scores: the lower chunk id first
    assert dict(mixed) == {1: 4.0, 2: 4.0, 3: 2.0}
    assert add_feedback(first, second, 0.2, 1) == [(1, 4.0)]
    assert add_feedback(first, [], 0.5, 5) == first


def test_within_budget_keeps_terms_in_order_while_their_chunk_counts_fit() -> None:
    counts = {"rare": 10, "common": 900, "mid": 80, "other": 15}
    terms = ["common", "rare", "absent", "mid", "other"]
    assert within_budget(terms, counts, 100) == ["rare", "mid"]  # "other" would pass the budget: skipped too
    assert within_budget(terms, counts, 105) == ["rare", "mid", "other"]
    assert within_budget(terms, counts, 0) == ["common", "rare", "mid", "other"]  # no bound; absent terms dropped
    assert within_budget(terms, counts, 5) == []
