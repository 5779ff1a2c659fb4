"""The answer prompt: numbering, de-duplication, budget; citation checks, streamed and whole."""

from __future__ import annotations

from ragserve.domain import SearchHit
from ragserve.llm.extractive import ABSTENTION_TEXT
from ragserve.llm.prompts import (
    PROMPT_VERSION,
    CitationStreamFilter,
    build_answer_prompt,
    check_citations,
    estimate_tokens,
    is_abstention,
)


def _hit(n: int, text: str, document: str = "d1", title: str | None = None) -> SearchHit:
    return SearchHit(n, document, None, title, None, text, 1.0 / n, {})


WORDS = [f"w{i}" for i in range(60)]


def test_overlapping_chunks_are_trimmed_and_contained_ones_dropped_keeping_numbers() -> None:
    first = " ".join(WORDS[:30])
    second = " ".join(WORDS[20:50])  # overlaps the first by ten words, as adjacent chunks do
    inside = " ".join(WORDS[5:15])  # contained in the first
    other_doc = " ".join(WORDS[20:50])  # same words but another document: kept whole
    contexts = [_hit(1, first), _hit(2, second), _hit(3, inside), _hit(4, other_doc, "d2", "Other")]
    prompt = build_answer_prompt("what?", contexts, budget_tokens=10_000)
    text = prompt.messages[0].content
    assert prompt.shown == frozenset({1, 2, 4})
    assert f"[2] {' '.join(WORDS[30:50])}\n" in text, "the overlap is not repeated"
    assert "\n[3]" not in text
    assert f"[4] (Other) {other_doc}" in text
    assert text.rstrip().endswith("Question: what?\nAnswer:")
    assert PROMPT_VERSION


def test_exact_duplicates_across_documents_are_dropped() -> None:
    text = "Employees get 25 days of paid leave per year."
    prompt = build_answer_prompt("q", [_hit(1, text), _hit(2, text, "d2")], budget_tokens=10_000)
    assert prompt.shown == frozenset({1})


def test_passages_stop_at_the_budget() -> None:
    contexts = [_hit(i, " ".join(f"word{i}x{j}" for j in range(100)), f"d{i}") for i in range(1, 11)]
    small = build_answer_prompt("q", contexts, budget_tokens=800)
    assert 0 < len(small.shown) < 10
    assert estimate_tokens(list(small.messages)) <= 800
    assert small.shown == frozenset(range(1, len(small.shown) + 1)), "the best-ranked passages are kept"
    assert build_answer_prompt("q", contexts, budget_tokens=100).shown == frozenset()


def test_estimate_is_safe_for_non_ascii() -> None:
    assert estimate_tokens(["日本語のテキスト"]) >= 8
    assert estimate_tokens(["a" * 300]) >= 100


def test_invalid_citations_are_dropped() -> None:
    text, cited = check_citations("Leave is 25 days [2][9]. It expires in March [1, 7, 2]. Odd [x].", frozenset({1, 2}))
    assert text == "Leave is 25 days [2]. It expires in March [1][2]. Odd [x]."
    assert cited == [2, 1]
    assert check_citations("Only bad [5].", frozenset({1})) == ("Only bad.", [])


def test_stream_filter_matches_the_whole_text_check() -> None:
    deltas = ["Leave is", " 25 days [", "2", "][", "9", "]. Ex", "pires [1, ", "7]", ". [note] [3"]
    shown = frozenset({1, 2})
    citations = CitationStreamFilter(shown)
    streamed = "".join(citations.feed(d) for d in deltas) + citations.flush()
    assert streamed == "Leave is 25 days [2]. Expires [1]. [note] [3"


def test_abstention_is_recognised() -> None:
    assert is_abstention(ABSTENTION_TEXT)
    assert is_abstention(f'"{ABSTENTION_TEXT.lower()}"')
    assert is_abstention("   ")
    assert not is_abstention("Employees get 25 days [1].")
