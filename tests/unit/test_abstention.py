"""The abstention signal of the extractive generator: answer types, passage coverage, and the fitted model
telling a passage that answers from one that only shares the question's topic."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest
import Stemmer

from ragserve.domain import SearchHit
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.embedding.protocol import EmbedKind, Vectors
from ragserve.llm.abstention import (
    CLAP_TUNED_MIN_CONFIDENCE,
    DEFAULT_ABSTENTION,
    AbstentionModel,
    AnswerType,
    Evidence,
    answer_type,
    has_answer_type,
)
from ragserve.llm.extractive import ExtractiveGenerator
from ragserve.llm.factory import build_generation
from ragserve.llm.sentences import ContentWords
from ragserve.settings import Settings


class BagEmbedder:
    """Stemmed words hashed into a unit vector: similarity is word overlap, with no model to download."""

    model_id = "test/bag"
    dimension = 256

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("english")

    def embed(self, texts: Sequence[str], kind: EmbedKind = "document") -> Vectors:
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for stem in self._stemmer.stemWords(re.findall(r"[a-z0-9]+", text.lower())):
                vectors[row, zlib.crc32(stem.encode()) % self.dimension] += 1.0
            vectors[row] /= max(float(np.linalg.norm(vectors[row])), 1e-9)
        return vectors

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(text.split()) for text in texts]


def hit(chunk_id: int, text: str, title: str) -> SearchHit:
    return SearchHit(chunk_id, f"doc-{chunk_id}", f"ext-{chunk_id}", title, None, text, 1.0 / chunk_id, {})


BOND = (
    "Sir Robert Bond was a Newfoundland politician who served as prime minister from 1900 to 1909. He was "
    "born in St. John's to a wealthy merchant family. Bond received several honours during his premiership. "
    "He retired to his estate at Whitbourne, where he farmed until his death."
)
COFFEE = (
    "Coffee is a beverage brewed from roasted coffee beans. It has a stimulating effect on humans, primarily "
    "due to its caffeine content. Brazil is the world's largest coffee producer, followed by Vietnam and "
    "Colombia."
)
BRIDGE = (
    "The Sir Robert Bond Bridge crosses the Gander River at Appleton. The bridge was built in 1962 and is "
    "named after the former prime minister. It carries Route 340 over the river."
)


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("when was the sir robert bond bridge built", AnswerType.TIME),
        ("What year did the war end?", AnswerType.TIME),
        ("how many days is south park fractured but whole", AnswerType.QUANTITY),
        ("How long is the Nile?", AnswerType.QUANTITY),
        ("number of seasons of this is us", AnswerType.QUANTITY),
        ("who sings still haven't found what i'm looking for", AnswerType.NAME),
        ("Where is the Eiffel Tower?", AnswerType.NAME),
        ("what is the role of the prime minister in canada", AnswerType.OTHER),
        ("lemony snicket's a series of unfortunate events hindi", AnswerType.OTHER),
    ],
)
def test_answer_type_follows_the_question_words(question: str, kind: AnswerType) -> None:
    assert answer_type(question) is kind


@pytest.mark.parametrize(
    ("kind", "sentence", "expected"),
    [
        (AnswerType.TIME, "The bridge was built in 1962 and is named after him.", True),
        (AnswerType.TIME, "It opened in the spring.", True),
        (AnswerType.TIME, "Bond received several honours during his premiership.", False),
        (AnswerType.QUANTITY, "The game lasts 13 days.", True),
        (AnswerType.QUANTITY, "It has three seasons.", True),
        (AnswerType.QUANTITY, "The game was praised by critics.", False),
        (AnswerType.NAME, "Robert Bond was born in St. John's.", True),  # St. John's is not in the question
        (AnswerType.NAME, "Robert Bond received several honours.", False),  # the question's own name
        (AnswerType.OTHER, "Anything at all.", True),
    ],
)
def test_has_answer_type(kind: AnswerType, sentence: str, expected: bool) -> None:
    words = ContentWords()
    question_terms = words.of("where was robert bond born")

    assert has_answer_type(kind, sentence, question_terms, words) is expected


def test_confidence_rises_with_each_signal() -> None:
    model = AbstentionModel(min_confidence=0.5, bias=-3.0, score_weight=2.0, coverage_weight=2.0, type_weight=1.0)
    weak = Evidence(score=0.5, coverage=0.5, has_answer_type=False)

    assert model.confidence(Evidence(0.9, 0.5, False)) > model.confidence(weak)
    assert model.confidence(Evidence(0.5, 1.0, False)) > model.confidence(weak)
    assert model.confidence(Evidence(0.5, 0.5, True)) > model.confidence(weak)
    assert not model.is_answered(weak)
    assert model.is_answered(Evidence(0.9, 1.0, True))


def test_zero_threshold_never_abstains() -> None:
    model = AbstentionModel(min_confidence=0.0, bias=-50.0, score_weight=0.0, coverage_weight=0.0, type_weight=0.0)

    assert model.is_answered(Evidence(0.0, 0.0, False))


def test_default_threshold_is_the_settings_default() -> None:
    assert Settings().answer.min_confidence == DEFAULT_ABSTENTION.min_confidence


def test_coverage_is_the_weighted_share_of_question_words_in_the_best_passage() -> None:
    generator = ExtractiveGenerator(BagEmbedder())
    contexts = [hit(1, BOND, "Robert Bond")]

    full = generator.evidence("where was robert bond born", contexts)
    partial = generator.evidence("where was robert bond born hindi", contexts)

    assert full is not None
    assert partial is not None
    assert full.coverage == pytest.approx(1.0)
    assert partial.coverage < 0.7  # "hindi" occurs in no sentence, so it weighs most
    assert full.has_answer_type  # "St. John's"


def test_evidence_of_contexts_without_sentences_is_none() -> None:
    assert ExtractiveGenerator(BagEmbedder()).evidence("who?", [hit(1, "Bond\n\n", "Bond")]) is None


# --- with the real model and the CLAP-tuned threshold -----------------------------------------------------------------


CLAP_TUNED = replace(DEFAULT_ABSTENTION, min_confidence=CLAP_TUNED_MIN_CONFIDENCE)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> OnnxEmbedder:
    return OnnxEmbedder(tmp_path_factory.mktemp("onnx-cache"))


@pytest.mark.parametrize(
    "question",
    [
        "when was the sir robert bond bridge built",  # the passage is about the man, not the bridge
        "robert bond newfoundland hindi translation",
    ],
)
async def test_same_topic_passage_that_does_not_answer_abstains(minilm: OnnxEmbedder, question: str) -> None:
    answer = await ExtractiveGenerator(minilm, abstention=CLAP_TUNED).generate(question, [hit(1, BOND, "Robert Bond")])

    assert answer.abstained


@pytest.mark.parametrize(
    ("question", "expected", "contexts"),
    [
        ("when was the sir robert bond bridge built", "built in 1962", (BRIDGE, BOND)),
        ("when was robert bond prime minister of newfoundland", "from 1900 to 1909", (BOND,)),
        ("where was robert bond born", "born in St. John's", (BOND,)),
    ],
)
async def test_passage_that_answers_is_quoted(
    minilm: OnnxEmbedder, question: str, expected: str, contexts: tuple[str, ...]
) -> None:
    hits = [hit(i, text, "Robert Bond") for i, text in enumerate(contexts, start=1)]

    answer = await ExtractiveGenerator(minilm, abstention=CLAP_TUNED).generate(question, hits)

    assert not answer.abstained
    assert expected in answer.text


async def test_min_confidence_setting_trades_abstentions_for_answers(minilm: OnnxEmbedder) -> None:
    # A paraphrase ("grows the most" for "largest producer") below other passages scores low (confidence about
    # 0.33): abstained at the default threshold, answered with a lower one.
    question = "Which country grows the most coffee?"
    contexts = [hit(1, BOND, "Robert Bond"), hit(2, BRIDGE, "Robert Bond Bridge"), hit(3, COFFEE, "Coffee")]
    strict = build_generation(Settings(answer={"min_confidence": CLAP_TUNED_MIN_CONFIDENCE}), minilm).generator
    lenient = build_generation(Settings(answer={"min_confidence": 0.2}), minilm).generator

    assert (await strict.generate(question, contexts)).abstained
    answer = await lenient.generate(question, contexts)
    assert not answer.abstained
    assert "Brazil" in answer.text
