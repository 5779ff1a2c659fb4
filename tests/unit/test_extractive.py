"""The extractive generator: right sentence, right citation, abstention, limits, streaming, splitting."""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest
import Stemmer

from ragserve.domain import Answer, AnswerDelta, SearchHit
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.embedding.protocol import EmbedKind, Vectors
from ragserve.llm.abstention import DEFAULT_ABSTENTION
from ragserve.llm.extractive import ABSTENTION_TEXT, ExtractiveGenerator
from ragserve.llm.protocol import AnswerGenerator
from ragserve.llm.sentences import split_sentences

_FAKE_STOP_WORDS = frozenset({"a", "an", "the", "of", "in", "to", "is", "was", "by", "it", "how", "what"})


class HashedBagEmbedder:
    """A deterministic stand-in for a sentence model: stemmed content words hashed into a unit vector.

    Records the thread and kind of every call, so tests can check how the generator uses it.
    """

    model_id = "test/hashed-bag"
    dimension = 512

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("english")
        self.calls: list[tuple[EmbedKind, int, int]] = []  # (kind, number of texts, thread id)

    def embed(self, texts: Sequence[str], kind: EmbedKind = "document") -> Vectors:
        self.calls.append((kind, len(texts), threading.get_ident()))
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _FAKE_STOP_WORDS]
            for stem in self._stemmer.stemWords(words):
                vectors[row, zlib.crc32(stem.encode()) % self.dimension] += 1.0
            norm = np.linalg.norm(vectors[row])
            if norm > 0:
                vectors[row] /= norm
        return vectors

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(text.split()) for text in texts]


EIFFEL = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
    "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. "
    "The tower is 330 metres tall, about the same height as an 81-storey building. It was the tallest "
    "man-made structure in the world until the Chrysler Building in New York City was finished in 1930."
)
PHOTOSYNTHESIS = (
    "Photosynthesis is the process by which plants, algae and some bacteria convert light energy into "
    "chemical energy. Most plants carry it out in their chloroplasts, using the green pigment chlorophyll. "
    "The process releases oxygen as a by-product, e.g. most of the oxygen in the Earth's atmosphere."
)
PYTHON = (
    "Python is a high-level, general-purpose programming language created by Guido van Rossum. Its first "
    "version came out in 1991. Python 3.0 was released on 3 December 2008 and was not backward compatible "
    "with earlier releases. Dr. van Rossum stepped down as leader of the project in July 2018."
)


def hit(chunk_id: int, text: str, title: str) -> SearchHit:
    return SearchHit(
        chunk_id=chunk_id,
        document_id=f"doc-{chunk_id}",
        external_id=f"ext-{chunk_id}",
        title=title,
        source=f"https://example.org/{chunk_id}",
        text=text,
        score=1.0 / chunk_id,
        metadata={},
    )


# The chunk that answers each question below is deliberately not the first one.
CONTEXTS = (
    hit(11, PHOTOSYNTHESIS, "Photosynthesis"),
    hit(12, EIFFEL, "Eiffel Tower"),
    hit(13, PYTHON, "Python"),
)


@pytest.fixture
def embedder() -> HashedBagEmbedder:
    return HashedBagEmbedder()


# The abstention model is calibrated on MiniLM's scores; with the stand-in embedder only min_score abstains,
# whatever the default min_confidence.
SCORE_ONLY = replace(DEFAULT_ABSTENTION, min_confidence=0.0)


@pytest.fixture
def generator(embedder: HashedBagEmbedder) -> ExtractiveGenerator:
    return ExtractiveGenerator(embedder, abstention=SCORE_ONLY)


def markers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\[(\d+)\]", text)]


def answer_words(answer: Answer) -> int:
    return len(re.sub(r"\[\d+\]", " ", answer.text).split())


def test_is_an_answer_generator(generator: ExtractiveGenerator) -> None:
    assert isinstance(generator, AnswerGenerator)
    assert generator.name == "extractive"


@pytest.mark.parametrize(
    ("question", "expected", "context_index"),
    [
        ("How tall is the Eiffel Tower?", "The tower is 330 metres tall", 2),
        ("When was Python 3.0 released?", "Python 3.0 was released on 3 December 2008", 3),
        ("Which pigment do plants use for photosynthesis?", "using the green pigment chlorophyll", 1),
    ],
)
async def test_answer_quotes_the_sentence_that_answers_and_cites_its_chunk(
    generator: ExtractiveGenerator, question: str, expected: str, context_index: int
) -> None:
    answer = await generator.generate(question, CONTEXTS)

    assert not answer.abstained
    assert answer.generator == "extractive"
    sentence_at = answer.text.index(expected)
    marker = re.search(r"\[(\d+)\]", answer.text[sentence_at:])
    assert marker is not None
    assert int(marker.group(1)) == context_index
    cited = {c.index: c for c in answer.citations}
    assert expected in cited[context_index].quote
    assert cited[context_index].chunk_id == CONTEXTS[context_index - 1].chunk_id


async def test_answer_from_two_chunks_cites_each_in_context_order(embedder: HashedBagEmbedder) -> None:
    generator = ExtractiveGenerator(embedder, min_score=0.0, relative_score=0.0, abstention=SCORE_ONLY)

    answer = await generator.generate("When was Python 3.0 released, and how tall is the Eiffel Tower?", CONTEXTS)

    assert answer.text.index("330 metres tall") < answer.text.index("Python 3.0 was released")
    assert markers(answer.text) == sorted(markers(answer.text))
    assert [c.index for c in answer.citations] == sorted(set(markers(answer.text)))
    assert {2, 3} <= {c.index for c in answer.citations}
    for citation in answer.citations:
        source = CONTEXTS[citation.index - 1]
        assert (citation.chunk_id, citation.document_id, citation.external_id) == (
            source.chunk_id,
            source.document_id,
            source.external_id,
        )
        assert (citation.title, citation.source) == (source.title, source.source)
        for sentence in split_sentences(citation.quote):
            assert sentence in source.text
            assert f"{sentence} [{citation.index}]" in answer.text


async def test_unrelated_question_abstains(generator: ExtractiveGenerator) -> None:
    answer = await generator.generate("What is the boiling point of mercury?", CONTEXTS)

    assert answer == Answer(text=ABSTENTION_TEXT, abstained=True, citations=(), generator="extractive")


async def test_no_contexts_abstains_without_embedding(
    generator: ExtractiveGenerator, embedder: HashedBagEmbedder
) -> None:
    answer = await generator.generate("How tall is the Eiffel Tower?", [])

    assert answer.abstained
    assert answer.text == ABSTENTION_TEXT
    assert answer.citations == ()
    assert embedder.calls == []


async def test_contexts_without_sentences_abstain(generator: ExtractiveGenerator) -> None:
    answer = await generator.generate("How tall is the Eiffel Tower?", [hit(1, "Eiffel Tower\n\n", "Eiffel")])

    assert answer.abstained


async def test_embeds_once_per_request_off_the_event_loop_thread(
    generator: ExtractiveGenerator, embedder: HashedBagEmbedder
) -> None:
    await generator.generate("How tall is the Eiffel Tower?", CONTEXTS)

    assert [(kind, n) for kind, n, _ in embedder.calls] == [("query", 1), ("document", 11)]
    assert all(thread != threading.get_ident() for _, _, thread in embedder.calls)


@pytest.mark.parametrize("max_words", [12, 25, 40])
async def test_answer_respects_max_words(embedder: HashedBagEmbedder, max_words: int) -> None:
    generator = ExtractiveGenerator(embedder, max_words=max_words, relative_score=0.0, abstention=SCORE_ONLY)

    answer = await generator.generate("Who built the Eiffel Tower, and how tall is the tower?", CONTEXTS)

    assert not answer.abstained
    assert 0 < answer_words(answer) <= max_words


async def test_answer_respects_max_sentences(embedder: HashedBagEmbedder) -> None:
    generator = ExtractiveGenerator(embedder, max_sentences=1, relative_score=0.0, abstention=SCORE_ONLY)

    answer = await generator.generate("Who built the Eiffel Tower, and how tall is the tower?", CONTEXTS)

    assert len(markers(answer.text)) == 1


async def test_sentence_longer_than_max_words_is_cut(embedder: HashedBagEmbedder) -> None:
    generator = ExtractiveGenerator(embedder, max_words=5, abstention=SCORE_ONLY)

    answer = await generator.generate("How tall is the Eiffel Tower?", CONTEXTS)

    assert answer_words(answer) == 5
    assert answer.text.endswith("… [2]")


async def test_repeated_sentence_from_overlapping_chunks_appears_once(generator: ExtractiveGenerator) -> None:
    overlapping = (hit(1, EIFFEL, "Eiffel Tower"), hit(2, EIFFEL.split(". ", 2)[2], "Eiffel Tower"))

    answer = await generator.generate("How tall is the Eiffel Tower?", overlapping)

    assert answer.text.count("330 metres tall") == 1


async def test_reference_markers_in_source_text_do_not_leak(generator: ExtractiveGenerator) -> None:
    wiki = "The tower is 330 metres tall.[7] It was completed in 1889 [8][9]."

    answer = await generator.generate("How tall is the Eiffel Tower?", [hit(1, wiki, "Eiffel Tower")])

    assert set(markers(answer.text)) == {1}
    assert "330 metres tall" in answer.text


async def test_stream_pieces_concatenate_to_the_answer(generator: ExtractiveGenerator) -> None:
    question = "When was Python 3.0 released?"
    expected = await generator.generate(question, CONTEXTS)

    items = [item async for item in generator.stream(question, CONTEXTS)]

    *deltas, final = items
    assert final == expected
    assert all(isinstance(d, AnswerDelta) for d in deltas)
    pieces = [d.text for d in deltas if isinstance(d, AnswerDelta)]
    assert "".join(pieces) == expected.text
    assert len(pieces) == len(expected.text.split(" "))
    assert any(re.fullmatch(r"\[\d+\] ?", piece) for piece in pieces)


async def test_stream_of_an_abstention_spells_the_abstention(generator: ExtractiveGenerator) -> None:
    items = [item async for item in generator.stream("How tall is the Eiffel Tower?", [])]

    assert "".join(i.text for i in items[:-1]) == ABSTENTION_TEXT
    assert isinstance(items[-1], Answer)
    assert items[-1].abstained


async def test_same_input_same_answer(generator: ExtractiveGenerator) -> None:
    first = await generator.generate("Who created Python?", CONTEXTS)
    second = await generator.generate("Who created Python?", CONTEXTS)

    assert first == second


@pytest.mark.parametrize(
    "settings",
    [
        {"max_sentences": 0},
        {"max_words": 0},
        {"lexical_weight": -0.1},
        {"dense_weight": 0, "lexical_weight": 0, "rank_weight": 0},
    ],
)
def test_bad_settings_are_refused(embedder: HashedBagEmbedder, settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        ExtractiveGenerator(embedder, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Dr. Smith weighed 3.5 kg. Then he left.", ["Dr. Smith weighed 3.5 kg.", "Then he left."]),
        (
            "Old cities, e.g. Rome, are crowded. See Fig. 2 for more.",
            ["Old cities, e.g. Rome, are crowded.", "See Fig. 2 for more."],
        ),
        (
            "Smith et al. (2020) said so. Jones disagreed.",
            ["Smith et al. (2020) said so.", "Jones disagreed."],
        ),
        (
            "It was written by J. R. R. Tolkien. It sold well.",
            ["It was written by J. R. R. Tolkien.", "It sold well."],
        ),
        (
            "It opened in 1889.[3] It is 330 m tall [4]. Really",
            ["It opened in 1889.[3]", "It is 330 m tall [4].", "Really"],
        ),
        ('Is it? Yes! "Quite so." Fine', ["Is it?", "Yes!", '"Quite so."', "Fine"]),
        (
            "Heading\n\nA paragraph\nwrapped over lines.\n- first item\n- second item",
            ["Heading", "A paragraph wrapped over lines.", "first item", "second item"],
        ),
        ("prices rose 2.5% in the U.S. last year", ["prices rose 2.5% in the U.S. last year"]),
        ("  \n ", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


# --- with the real model -----------------------------------------------------------------------------------

REEF = (
    "The Great Barrier Reef is the world's largest coral reef system, composed of over 2,900 individual reefs "
    "and 900 islands stretching for over 2,300 kilometres. The reef is located in the Coral Sea, off the coast "
    "of Queensland, Australia. It was selected as a World Heritage Site in 1981."
)
CURIE = (
    "Marie Curie (7 November 1867 \u2013 4 July 1934) was a Polish and naturalised-French physicist and chemist. "
    "She was the first woman to win a Nobel Prize. Her achievements included the discovery of two elements, "
    "polonium and radium. She died in 1934 of aplastic anaemia, likely from exposure to radiation."
)
EVEREST = (
    "Mount Everest is Earth's highest mountain above sea level, in the Himalayas. Its elevation of "
    "8,848.86 m was most recently established in 2020. Tenzing Norgay and Edmund Hillary made the first "
    "official ascent of Everest in 1953, using the southeast ridge route."
)
COFFEE = (
    "Coffee is a beverage brewed from roasted coffee beans. It has a stimulating effect on humans, primarily "
    "due to its caffeine content. Brazil is the world's largest coffee producer, followed by Vietnam and "
    "Colombia."
)
KUBERNETES = (
    "Kubernetes is an open-source container orchestration system for automating software deployment. "
    "Originally designed by Google, it is now maintained by the Cloud Native Computing Foundation. "
    "A pod is the basic scheduling unit in Kubernetes."
)
EIGHT_CONTEXTS = (
    *CONTEXTS,
    hit(14, REEF, "Great Barrier Reef"),
    hit(15, CURIE, "Marie Curie"),
    hit(16, EVEREST, "Mount Everest"),
    hit(17, COFFEE, "Coffee"),
    hit(18, KUBERNETES, "Kubernetes"),
)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> OnnxEmbedder:
    return OnnxEmbedder(tmp_path_factory.mktemp("onnx-cache"))


@pytest.mark.parametrize(
    ("question", "expected", "context_index"),
    [
        ("how tall is the eiffel tower", "The tower is 330 metres tall", 2),
        ("Who made the first ascent of Everest?", "Tenzing Norgay and Edmund Hillary", 6),
        ("which elements did marie curie discover", "polonium and radium", 5),
        (
            "Which country is the world's largest producer of coffee?",
            "Brazil is the world's largest coffee producer",
            7,
        ),
        ("When did the reef become a World Heritage Site?", "selected as a World Heritage Site in 1981", 4),
    ],
)
async def test_with_minilm_the_answer_is_the_sentence_that_answers(
    minilm: OnnxEmbedder, question: str, expected: str, context_index: int
) -> None:
    answer = await ExtractiveGenerator(minilm).generate(question, EIGHT_CONTEXTS)

    assert not answer.abstained
    assert re.search(re.escape(expected) + r"[^\[]*\[" + str(context_index) + r"\]", answer.text)
    assert [c.chunk_id for c in answer.citations] == [EIGHT_CONTEXTS[context_index - 1].chunk_id]


@pytest.mark.parametrize(
    "question",
    ["Who won the 2018 FIFA World Cup?", "What is the boiling point of mercury?", "How do I reset my password?"],
)
async def test_with_minilm_an_unrelated_question_abstains(minilm: OnnxEmbedder, question: str) -> None:
    answer = await ExtractiveGenerator(minilm).generate(question, EIGHT_CONTEXTS)

    assert answer.abstained
    assert answer.text == ABSTENTION_TEXT
