"""Answer evaluation on question-answering sets: does the answer path find the gold answer, cite the gold
passage, and abstain when the documents cannot answer?

A dataset directory holds a BEIR-layout ``corpus.jsonl`` (the passages to ingest) and ``qa.jsonl``, one question
per line: ``id``, ``question``, ``answers`` (gold answer strings), ``context_id`` (the corpus ``_id`` of the gold
passage) and optionally ``answerable`` (false: the corpus cannot answer it) and ``answer_starts``. Rows with
``answer_starts`` have short extractive gold answers (SQuAD); the others long-form ones (CLAP NQ), so only the
first are scored for the gold answer's text.

Gold text is matched as in the SQuAD script: lowercased, ASCII punctuation and the articles a/an/the removed,
white space collapsed, and then looked for as a whole-word run inside the answer (or a cited quote).
"""

from __future__ import annotations

import json
import random
import re
import statistics
import string
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragserve.domain import Answer
from ragserve.errors import NotFoundError
from ragserve.evaluation import percentile

DEFAULT_SAMPLE = 500
DEFAULT_SAMPLE_PER_CLASS = 300  # answerable and unanswerable alike, for sets that have both

_MARKER = re.compile(r"\s*\[\d+\]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


@dataclass(frozen=True, slots=True)
class QAItem:
    id: str
    question: str
    answers: tuple[str, ...]
    context_id: str
    is_answerable: bool = True


@dataclass(frozen=True, slots=True)
class QASet:
    """A dataset's questions; ``has_spans``: the gold answers are short spans of the passage (SQuAD)."""

    name: str
    items: tuple[QAItem, ...]
    has_spans: bool


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """One question's outcome. ``gold_in_answer``/``gold_in_quotes`` are None for long-form gold answers and
    for unanswerable questions, ``cites_gold_passage`` for unanswerable ones (they have no gold passage);
    ``answer_words`` counts the answer's words without its ``[n]`` markers."""

    id: str
    is_answerable: bool
    abstained: bool
    gold_in_answer: bool | None
    gold_in_quotes: bool | None
    cites_gold_passage: bool | None
    answer_words: int
    latency_ms: float
    generator: str
    answer: str


def read_qa(dataset: Path) -> QASet:
    """The questions of ``dataset/qa.jsonl``. Raises ``NotFoundError`` when there is none."""
    path = dataset / "qa.jsonl"
    if not path.exists():
        raise NotFoundError(f"{path} not found: not a question-answering dataset")
    items: list[QAItem] = []
    has_spans = True
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            has_spans = has_spans and "answer_starts" in row
            items.append(
                QAItem(
                    id=str(row["id"]),
                    question=str(row["question"]),
                    answers=tuple(str(a) for a in row.get("answers") or ()),
                    context_id=str(row["context_id"]),
                    is_answerable=bool(row.get("answerable", True)),
                )
            )
    return QASet(dataset.resolve().name, tuple(items), has_spans and bool(items))


def sample_questions(qa: QASet, sample: int | None, seed: int) -> list[QAItem]:
    """A seeded sample: ``sample`` questions (default 500), or, when the set has unanswerable questions,
    ``sample`` of each kind (default 300 + 300). All of them when there are fewer."""
    answerable = [item for item in qa.items if item.is_answerable]
    unanswerable = [item for item in qa.items if not item.is_answerable]
    rng = random.Random(seed)
    if not unanswerable:
        return rng.sample(answerable, min(sample or DEFAULT_SAMPLE, len(answerable)))
    size = sample or DEFAULT_SAMPLE_PER_CLASS
    chosen = rng.sample(answerable, min(size, len(answerable)))
    return chosen + rng.sample(unanswerable, min(size, len(unanswerable)))


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def contains_gold(text: str, answers: Sequence[str]) -> bool:
    """Whether any gold answer, normalised, is a whole-word run of ``text`` normalised (markers removed)."""
    haystack = f" {normalize_answer(_MARKER.sub(' ', text))} "
    return any(gold and f" {gold} " in haystack for gold in map(normalize_answer, answers))


def score(item: QAItem, answer: Answer, latency_ms: float, has_spans: bool) -> AnswerRecord:
    """``item``'s outcome for ``answer``; an abstention finds no gold answer and cites nothing."""
    answered = not answer.abstained
    spans = has_spans and item.is_answerable
    quotes = [c.quote for c in answer.citations] if answered else []
    return AnswerRecord(
        id=item.id,
        is_answerable=item.is_answerable,
        abstained=answer.abstained,
        gold_in_answer=(answered and contains_gold(answer.text, item.answers)) if spans else None,
        gold_in_quotes=any(contains_gold(q, item.answers) for q in quotes) if spans else None,
        cites_gold_passage=(answered and any(c.external_id == item.context_id for c in answer.citations))
        if item.is_answerable
        else None,
        answer_words=len(_MARKER.sub("", answer.text).split()) if answered else 0,
        latency_ms=round(latency_ms, 2),
        generator=answer.generator,
        answer=answer.text,
    )


async def run_questions(
    items: Sequence[QAItem],
    ask: Callable[[str], Awaitable[Answer]],
    has_spans: bool,
    clock: Callable[[], float],
    progress: Callable[[int], None] = lambda done: None,
) -> list[AnswerRecord]:
    """Ask each question in turn (``clock`` in seconds times each) and score the answers."""
    records = []
    for done, item in enumerate(items, start=1):
        start = clock()
        answer = await ask(item.question)
        records.append(score(item, answer, (clock() - start) * 1000, has_spans))
        progress(done)
    return records


def _share(flags: Sequence[bool | None]) -> float | None:
    values = [flag for flag in flags if flag is not None]
    return round(sum(values) / len(values), 4) if values else None


def summarise(records: Sequence[AnswerRecord]) -> dict[str, Any]:
    """Rates per kind of question, the median length of the answers given, and latency percentiles."""
    answerable = [r for r in records if r.is_answerable]
    unanswerable = [r for r in records if not r.is_answerable]
    answered = [r for r in records if not r.abstained]
    summary: dict[str, Any] = {"questions": len(records), "generators": dict(Counter(r.generator for r in records))}
    if answerable:
        summary["answerable"] = {
            "questions": len(answerable),
            "abstained": _share([r.abstained for r in answerable]),
            "answered_citing_gold_passage": _share([r.cites_gold_passage for r in answerable]),
            "gold_in_answer": _share([r.gold_in_answer for r in answerable]),
            "gold_in_quotes": _share([r.gold_in_quotes for r in answerable]),
        }
    if unanswerable:
        summary["unanswerable"] = {
            "questions": len(unanswerable),
            "abstained": _share([r.abstained for r in unanswerable]),
        }
    summary["median_answer_words"] = statistics.median(r.answer_words for r in answered) if answered else None
    latencies = [r.latency_ms for r in records]
    summary["latency_ms_p50"] = round(percentile(latencies, 50), 2)
    summary["latency_ms_p95"] = round(percentile(latencies, 95), 2)
    return summary


@dataclass(frozen=True, slots=True)
class Target:
    """A quality target of issue 3: ``value`` must be at least (or, with ``is_maximum``, at most) ``bound``."""

    name: str
    value: float | None
    bound: float
    is_maximum: bool = False

    @property
    def is_met(self) -> bool:
        if self.value is None:
            return False
        return self.value <= self.bound if self.is_maximum else self.value >= self.bound


def targets(summary: dict[str, Any], has_spans: bool) -> list[Target]:
    """The targets that apply: gold answer in the answer and short answers for extractive gold answers;
    abstention on unanswerable questions and gold-passage citations for long-form ones."""
    found: list[Target] = []
    answerable = summary.get("answerable", {})
    if has_spans and answerable:
        found.append(Target("answerable.gold_in_answer", answerable["gold_in_answer"], 0.75))
        found.append(Target("median_answer_words", summary["median_answer_words"], 50, is_maximum=True))
    if "unanswerable" in summary:
        found.append(Target("unanswerable.abstained", summary["unanswerable"]["abstained"], 0.70))
        if not has_spans and answerable:
            found.append(
                Target("answerable.answered_citing_gold_passage", answerable["answered_citing_gold_passage"], 0.80)
            )
    return found


def answer_report(
    qa: QASet, records: Sequence[AnswerRecord], settings: dict[str, Any], corpus_documents: int
) -> dict[str, Any]:
    """The JSON report: the run's settings, the summary, the targets and every question's record."""
    summary = summarise(records)
    return {
        "dataset": qa.name,
        **settings,
        "corpus_documents": corpus_documents,
        **summary,
        "targets": [{**asdict(t), "met": t.is_met} for t in targets(summary, qa.has_spans)],
        "records": [asdict(r) for r in records],
    }
