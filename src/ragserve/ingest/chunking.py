"""Structure-aware chunking: a parsed document's blocks into chunks bounded in embedding-model tokens.

Blocks are grouped into runs of the same section; a chunk never spans two sections, so its ``section_path``
is exact. Within a section, blocks are split into sentences (``sentences.split_sentences``) and the sentences
packed greedily into chunks of at most ``max_tokens``. Each chunk after the first in a section starts with
the last sentences of the one before, up to ``overlap_tokens``, so a fact cut at a boundary is whole in one
of them. When a paragraph will not fit in the chunk being filled and that chunk is already half full, the
chunk ends at the paragraph boundary instead of mid-paragraph. A sentence longer than ``max_tokens`` on its
own is cut between words (between characters, for a "word" such as a long URL that is itself too long).

Token counts come from the caller's counter, called on batches of texts. Packing adds sentence counts; the
finished chunks are then counted as wholes, and the rare chunk whose real count is over the limit (a
tokenizer whose counts are not additive across spaces) is split again, so the bound holds for any counter.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from ragserve.domain import ChunkDraft, ParsedDocument, TextBlock
from ragserve.ingest.sentences import split_sentences

TokenCounter: TypeAlias = Callable[[Sequence[str]], list[int]]
"""Counts the model tokens of each text in a batch, without special tokens."""

# Texts per call to the counter: large enough to amortise the call, small enough to bound its memory.
COUNT_BATCH_SIZE = 2048
# A chunk at least this full ends at a paragraph boundary rather than take part of the next paragraph.
PARAGRAPH_BREAK_FILL = 0.5
BLOCK_SEPARATOR = "\n"
_WORD_RE = re.compile(r"\S+\s*")


@dataclass(frozen=True, slots=True)
class _Unit:
    """A sentence, or a piece of an over-long one: its text with the whitespace after it, and its tokens."""

    text: str
    tokens: int
    page: int | None


def chunk_document(
    parsed: ParsedDocument,
    count_tokens: TokenCounter,
    *,
    max_tokens: int = 200,
    overlap_tokens: int = 40,
) -> list[ChunkDraft]:
    """Split a parsed document into chunks of at most ``max_tokens`` tokens each, by ``count_tokens``.

    Returns chunks with ordinals 0..n-1, each with its section path, the page of its first sentence and its
    token count; an empty document gives ``[]``. Deterministic for a deterministic counter. Raises
    ValueError unless ``0 <= overlap_tokens < max_tokens``.
    """
    if max_tokens < 1 or not 0 <= overlap_tokens < max_tokens:
        raise ValueError(f"need 0 <= overlap_tokens < max_tokens, got {overlap_tokens} and {max_tokens}")
    # Sentences of the whole document are counted in one go; only then is it cut into sections.
    units_per_block = _block_units(parsed.blocks, count_tokens, max_tokens)
    packed: list[tuple[tuple[str, ...], list[_Unit]]] = []
    pairs = zip(parsed.blocks, units_per_block, strict=True)
    for path, run in itertools.groupby(pairs, key=lambda pair: pair[0].section_path):
        blocks = [block_units for _, block_units in run if block_units]
        packed.extend((path, chunk) for chunk in _pack(blocks, max_tokens, overlap_tokens))
    fitted = _enforce_limit(packed, count_tokens, max_tokens)
    return [
        ChunkDraft(ordinal=ordinal, text=text, section_path=path, page=units[0].page, token_count=tokens)
        for ordinal, (path, units, text, tokens) in enumerate(fitted)
    ]


def count_in_batches(count_tokens: TokenCounter, texts: Sequence[str]) -> list[int]:
    """``count_tokens`` over ``texts`` in batches of ``COUNT_BATCH_SIZE``; one count per text, in order."""
    counts: list[int] = []
    for start in range(0, len(texts), COUNT_BATCH_SIZE):
        counts.extend(count_tokens(texts[start : start + COUNT_BATCH_SIZE]))
    if len(counts) != len(texts):
        raise ValueError(f"token counter returned {len(counts)} counts for {len(texts)} texts")
    return counts


def _block_units(blocks: Sequence[TextBlock], count_tokens: TokenCounter, max_tokens: int) -> list[list[_Unit]]:
    """Each block's sentences as units of at most ``max_tokens`` (a list per block, empty for a blank block);
    a block's last unit ends in a separator."""
    sentences: list[tuple[int, str]] = []
    for index, block in enumerate(blocks):
        pieces = split_sentences(block.text)
        if pieces:
            pieces[-1] += BLOCK_SEPARATOR
        sentences.extend((index, piece) for piece in pieces)
    counts = count_in_batches(count_tokens, [text.strip() for _, text in sentences])
    long_texts = [text for (_, text), tokens in zip(sentences, counts, strict=True) if tokens > max_tokens]
    long_pieces = iter(_split_long(long_texts, count_tokens, max_tokens))
    units: list[list[_Unit]] = [[] for _ in blocks]
    for (index, text), tokens in zip(sentences, counts, strict=True):
        page = blocks[index].page
        if tokens <= max_tokens:
            units[index].append(_Unit(text, tokens, page))
        else:
            units[index].extend(_Unit(piece, piece_tokens, page) for piece, piece_tokens in next(long_pieces))
    return units


def _split_long(texts: list[str], count_tokens: TokenCounter, max_tokens: int) -> list[list[tuple[str, int]]]:
    """Cut each text between words into pieces of at most ``max_tokens``; returns (piece, tokens) per text.

    A single word over the limit is cut between characters. Piece counts are re-measured, and a piece a
    non-additive counter still puts over the limit is cut again.
    """
    words = [_WORD_RE.findall(text) for text in texts]
    flat_counts = iter(count_in_batches(count_tokens, [word.strip() for text_words in words for word in text_words]))
    pieces_per_text = [_pack_words(text_words, flat_counts, max_tokens) for text_words in words]
    measured = iter(_measured([piece for pieces in pieces_per_text for piece in pieces], count_tokens, max_tokens))
    return [[part for _ in pieces for part in next(measured)] for pieces in pieces_per_text]


def _pack_words(words: list[str], counts: Iterator[int], max_tokens: int) -> list[str]:
    """Join consecutive words (taking their counts from ``counts``) into pieces of at most ``max_tokens``."""
    pieces: list[str] = []
    current, current_tokens = "", 0
    for word in words:
        tokens = next(counts)
        if current and current_tokens + tokens > max_tokens:
            pieces.append(current)
            current, current_tokens = "", 0
        if tokens > max_tokens:
            pieces.extend(_cut_characters(word, tokens, max_tokens))
        else:
            current, current_tokens = current + word, current_tokens + tokens
    if current:
        pieces.append(current)
    return pieces


def _cut_characters(word: str, tokens: int, max_tokens: int) -> list[str]:
    # Cut finer than the average would need, so uneven tokens per character still leave pieces in bounds.
    parts = -(-tokens // max_tokens) * 2
    step = max(1, -(-len(word) // parts))
    return [word[start : start + step] for start in range(0, len(word), step)]


def _measured(pieces: list[str], count_tokens: TokenCounter, max_tokens: int) -> list[list[tuple[str, int]]]:
    """Each piece with its real count, as a list that holds the piece's halves (by words, else characters)
    instead when the counter still puts it over ``max_tokens``. Blank halves are dropped."""
    counts = count_in_batches(count_tokens, [piece.strip() for piece in pieces])
    measured: list[list[tuple[str, int]]] = []
    for piece, tokens in zip(pieces, counts, strict=True):
        if tokens <= max_tokens or len(piece.strip()) <= 1:
            measured.append([(piece, tokens)])
            continue
        words = _WORD_RE.findall(piece)
        middle = len(words) // 2
        halves = (
            ["".join(words[:middle]), "".join(words[middle:])]
            if middle
            else [piece[: len(piece) // 2], piece[len(piece) // 2 :]]
        )
        halves = [half for half in halves if half.strip()]
        measured.append([part for parts in _measured(halves, count_tokens, max_tokens) for part in parts])
    return measured


def _pack(blocks: list[list[_Unit]], max_tokens: int, overlap_tokens: int) -> list[list[_Unit]]:
    """Pack one section's units greedily into chunks of at most ``max_tokens`` (by summed unit counts)."""
    chunks: list[list[_Unit]] = []
    current: list[_Unit] = []
    total = 0
    for block in blocks:
        block_tokens = sum(unit.tokens for unit in block)
        is_break_at_block = total + block_tokens > max_tokens and total >= PARAGRAPH_BREAK_FILL * max_tokens
        for position, unit in enumerate(block):
            if current and (total + unit.tokens > max_tokens or (position == 0 and is_break_at_block)):
                chunks.append(current)
                current = _overlap(current, min(overlap_tokens, max_tokens - unit.tokens))
                total = sum(kept.tokens for kept in current)
            current.append(unit)
            total += unit.tokens
    if current:
        chunks.append(current)
    return chunks


def _overlap(chunk: list[_Unit], budget_tokens: int) -> list[_Unit]:
    """The trailing units of ``chunk`` totalling at most ``budget_tokens``, never the whole chunk."""
    start, taken = len(chunk), 0
    while start > 1 and taken + chunk[start - 1].tokens <= budget_tokens:
        start -= 1
        taken += chunk[start].tokens
    return chunk[start:]


def _chunk_text(units: list[_Unit]) -> str:
    return "".join(unit.text for unit in units).strip()


def _enforce_limit(
    packed: list[tuple[tuple[str, ...], list[_Unit]]], count_tokens: TokenCounter, max_tokens: int
) -> list[tuple[tuple[str, ...], list[_Unit], str, int]]:
    """Count each packed chunk as a whole; split any the counter puts over ``max_tokens`` until all fit.

    A chunk of one unit always fits (its unit was measured alone), so the halving ends.
    """
    pending = [(path, units, _chunk_text(units)) for path, units in packed]
    # A one-unit chunk's text is exactly what was counted for its unit: no need to count it again.
    to_count = [text for _, units, text in pending if len(units) > 1]
    counted = iter(count_in_batches(count_tokens, to_count))
    counts = [units[0].tokens if len(units) == 1 else next(counted) for _, units, _ in pending]
    fitted: list[tuple[tuple[str, ...], list[_Unit], str, int]] = []
    for (path, units, text), tokens in zip(pending, counts, strict=True):
        if tokens <= max_tokens or len(units) == 1:
            fitted.append((path, units, text, tokens))
            continue
        middle = len(units) // 2
        halves = [(path, units[:middle]), (path, units[middle:])]
        fitted.extend(_enforce_limit(halves, count_tokens, max_tokens))
    return fitted
