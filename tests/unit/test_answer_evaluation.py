"""Answer evaluation: SQuAD normalisation, gold matching, per-question scores, summaries and targets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ragserve.answer_evaluation import (
    AnswerRecord,
    QAItem,
    QASet,
    contains_gold,
    normalize_answer,
    read_qa,
    run_questions,
    sample_questions,
    score,
    summarise,
    targets,
)
from ragserve.domain import Answer, Citation
from ragserve.errors import NotFoundError
from tests.conftest import FIXTURES

ITEM = QAItem("q1", "Which NFL team won Super Bowl 50?", ("Denver Broncos", "the Broncos"), "p7")


def _answer(text: str, quotes: dict[str, str], abstained: bool = False) -> Answer:
    citations = tuple(
        Citation(i, i, f"doc-{ext}", ext, None, None, quote) for i, (ext, quote) in enumerate(quotes.items(), 1)
    )
    return Answer(text, abstained, citations, "extractive")


def _record(answerable: bool = True, abstained: bool = False, **fields: object) -> AnswerRecord:
    values: dict[str, object] = {
        "id": "q",
        "is_answerable": answerable,
        "abstained": abstained,
        "gold_in_answer": None,
        "gold_in_quotes": None,
        "cites_gold_passage": False,
        "answer_words": 0,
        "latency_ms": 10.0,
        "generator": "extractive",
        "answer": "",
    }
    values.update(fields)
    return AnswerRecord(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Denver Broncos!", "denver broncos"),
        ("  an   apple, a pear ", "apple pear"),
        ("Levi's Stadium", "levis stadium"),
        ("Theory of the atom", "theory of atom"),
    ],
)
def test_normalisation_follows_the_squad_script(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_gold_is_matched_as_whole_words_after_normalisation() -> None:
    assert contains_gold("In 2016 the Denver Broncos beat Carolina. [1]", ["Denver Broncos"])
    assert contains_gold("They were called THE BRONCOS [2].", ["Denver Broncos", "the Broncos"])
    assert not contains_gold("Golden anniversary celebrations.", ["gold"])
    assert not contains_gold("Denver's Broncos", ["Denver Broncos"])
    # A citation marker is not a word: gold "1" is not found in "[1]".
    assert not contains_gold("Nothing numeric here [1].", ["1"])
    assert not contains_gold("anything", ["the", ""])


def test_an_answer_with_the_gold_span_citing_the_gold_passage() -> None:
    answer = _answer(
        "The Denver Broncos defeated the Carolina Panthers [1]. It was played in 2016 [2].",
        {"p7": "The Denver Broncos defeated the Carolina Panthers", "p9": "It was played in 2016"},
    )
    record = score(ITEM, answer, 12.3456, has_spans=True)
    assert record.gold_in_answer is True
    assert record.gold_in_quotes is True
    assert record.cites_gold_passage is True
    assert record.answer_words == 12
    assert record.latency_ms == 12.35


def test_gold_only_in_a_quote_and_another_passage_cited() -> None:
    answer = _answer("Denver won [1].", {"p8": "Denver won; the Broncos celebrated."})
    record = score(ITEM, answer, 1.0, has_spans=True)
    assert record.gold_in_answer is False
    assert record.gold_in_quotes is True
    assert record.cites_gold_passage is False


def test_an_abstention_finds_nothing_and_has_no_length() -> None:
    answer = _answer("I could not find an answer to the Denver Broncos question.", {}, abstained=True)
    record = score(ITEM, answer, 1.0, has_spans=True)
    assert (record.gold_in_answer, record.gold_in_quotes, record.cites_gold_passage) == (False, False, False)
    assert record.answer_words == 0


def test_long_form_and_unanswerable_questions_are_not_scored_for_gold_text() -> None:
    answer = _answer("Denver Broncos [1].", {"p7": "Denver Broncos"})
    long_form = score(ITEM, answer, 1.0, has_spans=False)
    assert (long_form.gold_in_answer, long_form.gold_in_quotes) == (None, None)
    assert long_form.cites_gold_passage is True
    unanswerable = QAItem("q2", "?", (), "unans-q2", is_answerable=False)
    record = score(unanswerable, _answer("Denver [1].", {"unans-q2": "Denver"}), 1.0, has_spans=True)
    assert (record.gold_in_answer, record.gold_in_quotes, record.cites_gold_passage) == (None, None, None)


def test_summary_rates_median_length_and_latency() -> None:
    records = [
        _record(gold_in_answer=True, gold_in_quotes=True, cites_gold_passage=True, answer_words=30, latency_ms=10),
        _record(gold_in_answer=False, gold_in_quotes=True, cites_gold_passage=False, answer_words=50, latency_ms=20),
        _record(abstained=True, gold_in_answer=False, gold_in_quotes=False, latency_ms=30),
        _record(gold_in_answer=True, gold_in_quotes=True, cites_gold_passage=True, answer_words=70, latency_ms=40),
        _record(answerable=False, abstained=True, latency_ms=50),
        _record(answerable=False, answer_words=10, latency_ms=60),
    ]
    summary = summarise(records)
    assert summary["questions"] == 6
    assert summary["generators"] == {"extractive": 6}
    assert summary["answerable"] == {
        "questions": 4,
        "abstained": 0.25,
        "answered_citing_gold_passage": 0.5,
        "gold_in_answer": 0.5,
        "gold_in_quotes": 0.75,
    }
    assert summary["unanswerable"] == {"questions": 2, "abstained": 0.5}
    assert summary["median_answer_words"] == 40  # over the 4 answers given: 10, 30, 50, 70
    assert summary["latency_ms_p50"] == 30
    assert summary["latency_ms_p95"] == 60


def test_targets_for_extractive_and_long_form_sets() -> None:
    squad = summarise([_record(gold_in_answer=True, gold_in_quotes=True, answer_words=51)] * 3 + [_record()])
    met = {t.name: t.is_met for t in targets(squad, has_spans=True)}
    assert met == {"answerable.gold_in_answer": True, "median_answer_words": False}

    clap = summarise(
        [_record(cites_gold_passage=True, answer_words=20)] * 4
        + [_record(answerable=False, abstained=True)] * 2
        + [_record(answerable=False, answer_words=5)]
    )
    found = {t.name: (t.value, t.is_met) for t in targets(clap, has_spans=False)}
    assert found == {
        "unanswerable.abstained": (0.6667, False),
        "answerable.answered_citing_gold_passage": (1.0, True),
    }


def test_the_fixtures_read_as_extractive_and_long_form_sets() -> None:
    squad = read_qa(FIXTURES / "squad_mini")
    assert (squad.name, len(squad.items), squad.has_spans) == ("squad_mini", 16, True)
    assert all(item.is_answerable and item.answers for item in squad.items)
    clap = read_qa(FIXTURES / "clapnq_mini")
    assert (len(clap.items), clap.has_spans) == (8, False)
    assert sum(item.is_answerable for item in clap.items) == 4
    with pytest.raises(NotFoundError):
        read_qa(FIXTURES / "scifact_slice")


def test_samples_are_seeded_and_per_kind_when_some_are_unanswerable() -> None:
    items = tuple(QAItem(str(i), "?", ("a",), "p", is_answerable=i % 3 != 0) for i in range(30))
    mixed = QASet("mixed", items, has_spans=False)
    first = sample_questions(mixed, 5, seed=1)
    assert [i.id for i in first] == [i.id for i in sample_questions(mixed, 5, seed=1)]
    assert [i.id for i in first] != [i.id for i in sample_questions(mixed, 5, seed=2)]
    assert [i.is_answerable for i in first] == [True] * 5 + [False] * 5
    assert len(sample_questions(mixed, None, seed=1)) == 30  # 300 + 300 asked, 20 + 10 there
    only = QASet("only", tuple(i for i in items if i.is_answerable), has_spans=True)
    assert len(sample_questions(only, 7, seed=0)) == 7
    assert len({i.id for i in sample_questions(only, None, seed=0)}) == 20


async def test_questions_are_asked_in_turn_and_timed() -> None:
    ticks: Iterator[float] = iter([0.0, 0.25, 1.0, 1.5])
    asked: list[str] = []
    done: list[int] = []

    async def ask(question: str) -> Answer:
        asked.append(question)
        return _answer("The Broncos [1].", {"p7": "The Broncos."})

    items = [ITEM, QAItem("q2", "Who lost?", ("Carolina Panthers",), "p7")]
    records = await run_questions(items, ask, True, lambda: next(ticks), done.append)
    assert asked == [ITEM.question, "Who lost?"]
    assert [r.latency_ms for r in records] == [250.0, 500.0]
    assert [r.gold_in_answer for r in records] == [True, False]
    assert done == [1, 2]
