"""Whether the extractive generator's best sentence answers the question, or the contexts only share its topic.

Retrieval nearly always returns passages on the question's topic, so a high similarity score says little: the
passage about a bridge's namesake scores well for "when was the bridge built" without saying when. Two cheap
signals tell the cases apart, both computed on the question's stemmed content words and the best sentence:

- ``coverage``: the share of the question's content words, weighted by how rare each is among the candidate
  sentences, that the best sentence's passage (its text and title) contains. A question word the passage never
  uses ("hindi" in "lemony snicket's a series of unfortunate events hindi") is usually the part that asks.
- ``has_answer_type``: for a question that asks for a time (when, what year), a quantity (how many, how much)
  or a person or place (who, where), whether the best sentence holds a candidate of that type: a year, month or
  date; a number; a capitalised name that is not one of the question's own words. Other questions pass.

A logistic model over these and the sentence's blended score gives a confidence in 0..1; the generator abstains
below ``answer.min_confidence``. The weights were fitted on a tuning half of CLAP NQ dev (answerable against
unanswerable; ``bench/abstention_study.py`` re-runs the fit). The score carries nearly all the signal, and SQuAD's
answer sentences score as low as CLAP NQ's same-topic non-answers, so no one threshold serves both: the default
is off, and 0.45 is the CLAP-tuned choice (bench/README.md, "Abstention").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum

from ragserve.llm.sentences import ContentWords


class AnswerType(Enum):
    """What kind of phrase a question asks for; ``OTHER`` covers what, which, why, how and keyword queries."""

    TIME = "time"
    QUANTITY = "quantity"
    NAME = "name"
    OTHER = "other"


# First match wins: "how many years" asks for a quantity, "what year" for a time.
_QUESTION_TYPES = (
    (
        re.compile(r"\b(how (many|much|long|old|far|big|large|tall|high|deep|wide|fast|often))\b|\bnumber of\b"),
        AnswerType.QUANTITY,
    ),
    (re.compile(r"\bwhen\b|\b(what|which) (year|date|day|month|century|decade|time|period|era)\b"), AnswerType.TIME),
    (re.compile(r"\b(who|whom|whose|where)\b"), AnswerType.NAME),
)
_MONTHS = (
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec"
)
_TIME = re.compile(
    r"\b(1\d{3}|20\d{2}|\d{2,4}s|\d{1,2}(st|nd|rd|th)? century|" + "|".join(_MONTHS.split()) + r"|monday|tuesday|"
    r"wednesday|thursday|friday|saturday|sunday|spring|summer|autumn|fall|winter|today|yesterday|"
    r"centur(y|ies)|decades?|years? ago|annually|daily|weekly|monthly|\d{1,2}(:\d{2})? ?(am|pm|a\.m\.|p\.m\.))\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(
    r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|hundreds?|"
    r"thousands?|millions?|billions?|trillions?|dozens?|half|several|few|single|double|twice)\b",
    re.IGNORECASE,
)
_CAPITALISED = re.compile(r"\b[A-Z][\w'\u2019-]*")


def answer_type(question: str) -> AnswerType:
    """The type the question asks for, from its question words."""
    lowered = question.lower()
    for pattern, kind in _QUESTION_TYPES:
        if pattern.search(lowered):
            return kind
    return AnswerType.OTHER


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the best-scoring sentence offers: its blended ``score``, the IDF-weighted ``coverage`` of the
    question's content words by its passage, and whether it ``has_answer_type``."""

    score: float
    coverage: float
    has_answer_type: bool


def has_answer_type(
    kind: AnswerType, sentence: str, question_terms: frozenset[str], content_words: ContentWords
) -> bool:
    """Whether ``sentence`` holds a phrase of the ``kind`` asked for; a name must not be a question word
    (for "who founded Apple", "Apple" is no answer)."""
    if kind is AnswerType.TIME:
        return _TIME.search(sentence) is not None
    if kind is AnswerType.QUANTITY:
        return _NUMBER.search(sentence) is not None
    if kind is AnswerType.NAME:
        return any(not content_words.of(word) <= question_terms for word in _CAPITALISED.findall(sentence))
    return True


@dataclass(frozen=True, slots=True)
class AbstentionModel:
    """``confidence = sigmoid(bias + score_weight * score + coverage_weight * coverage + type_weight * typed)``,
    ``typed`` 1 when the answer type is present. The generator abstains when the confidence is below
    ``min_confidence``; 0 never abstains on these grounds."""

    min_confidence: float
    bias: float
    score_weight: float
    coverage_weight: float
    type_weight: float

    def confidence(self, evidence: Evidence) -> float:
        z = (
            self.bias
            + self.score_weight * evidence.score
            + self.coverage_weight * evidence.coverage
            + self.type_weight * float(evidence.has_answer_type)
        )
        return 1.0 / (1.0 + math.exp(-z))

    def is_answered(self, evidence: Evidence) -> bool:
        return self.confidence(evidence) >= self.min_confidence


# Weights fitted by bench/abstention_study.py on the tuning half of CLAP NQ dev (bench/README.md, "Abstention").
# The score carries nearly all the signal: confidence 0.45 is a best-sentence score of about 0.59-0.61, the
# CLAP-tuned threshold, at which SQuAD loses 12 points of gold-in-answer. So the default is off (0), and
# deployments whose questions are often unanswerable from their documents set answer.min_confidence.
CLAP_TUNED_MIN_CONFIDENCE = 0.45
DEFAULT_ABSTENTION = AbstentionModel(
    min_confidence=0.0, bias=-7.9506, score_weight=12.7951, coverage_weight=0.258, type_weight=0.1067
)
