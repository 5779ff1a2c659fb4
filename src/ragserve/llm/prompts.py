"""The versioned answer prompt: numbered context passages within a token budget, and the checks on what the
model wrote back (citations to passages it was not shown are dropped; the abstention sentence is recognised).

Passages keep their rank in the retrieved list as their number, so ``[n]`` always means ``contexts[n - 1]``
even when overlapping or duplicate chunks are left out of the prompt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ragserve.domain import SearchHit
from ragserve.llm.extractive import ABSTENTION_TEXT
from ragserve.llm.llm import ChatMessage

# Part of answer cache keys: change it whenever the wording below changes.
PROMPT_VERSION = "answer-v1"

_INSTRUCTIONS = (
    "Answer the question using only the numbered passages below. After each sentence, cite the passages it "
    "comes from by their numbers in square brackets, like [1] or [2][3]. Be brief. If the passages do not "
    f'contain the answer, reply exactly: "{ABSTENTION_TEXT}"'
)
_MESSAGE_OVERHEAD_TOKENS = 8
# Overlaps shorter than this many words are coincidences ("of the"), not chunk overlap.
_MIN_OVERLAP_WORDS = 6
_MIN_PASSAGE_WORDS = 4
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def estimate_tokens(texts: Sequence[str | ChatMessage]) -> int:
    """A safe upper estimate of tokens for any modern tokenizer, without one: English averages about four
    characters per token, so ASCII counts one per three characters, and every other character counts one."""
    total = 0
    for item in texts:
        text = item.content if isinstance(item, ChatMessage) else item
        ascii_chars = sum(1 for ch in text if ord(ch) < 128)
        total += (ascii_chars + 2) // 3 + (len(text) - ascii_chars) + _MESSAGE_OVERHEAD_TOKENS
    return total


@dataclass(frozen=True, slots=True)
class AnswerPrompt:
    """The messages to send and the 1-based numbers of the passages they show."""

    messages: tuple[ChatMessage, ...]
    shown: frozenset[int]


def build_answer_prompt(question: str, contexts: Sequence[SearchHit], budget_tokens: int) -> AnswerPrompt:
    """Passages in rank order, de-duplicated, as many as fit ``budget_tokens`` (instructions and question
    included). An empty ``shown`` means there is nothing to answer from: abstain without calling a model."""
    head = f"{_INSTRUCTIONS}\n\nPassages:\n"
    tail = f"\nQuestion: {question}\nAnswer:"
    used = estimate_tokens([head, tail])
    parts: list[str] = []
    shown: set[int] = set()
    for number, text in _distinct_passages(contexts):
        passage = f"[{number}] {text}\n"
        cost = estimate_tokens([passage]) - _MESSAGE_OVERHEAD_TOKENS
        if used + cost > budget_tokens:
            break
        parts.append(passage)
        shown.add(number)
        used += cost
    message = ChatMessage("user", head + "".join(parts) + tail)
    return AnswerPrompt(messages=(message,), shown=frozenset(shown))


def _distinct_passages(contexts: Sequence[SearchHit]) -> list[tuple[int, str]]:
    """Each context's text with what earlier passages of the same document already show cut away: adjacent
    chunks overlap by design, and a chunk inside another (or the same text twice) adds nothing."""
    kept: list[tuple[int, str, str, list[str]]] = []  # number, document, shown text, its words
    for number, hit in enumerate(contexts, start=1):
        words = hit.text.split()
        for _, document, _, other in kept:
            if document != hit.document_id and words != other:
                continue
            if _contains(other, words):
                words = []
                break
            words = words[_overlap(other, words) :]
            cut = _overlap(words, other)
            words = words[: len(words) - cut]
        if len(words) < _MIN_PASSAGE_WORDS:
            continue
        title = f"({hit.title}) " if hit.title else ""
        kept.append((number, hit.document_id, title + " ".join(words), words))
    return [(number, text) for number, _, text, _ in kept]


def _overlap(before: list[str], after: list[str]) -> int:
    """Length of the longest suffix of ``before`` that is a prefix of ``after``, if long enough to matter."""
    for size in range(min(len(before), len(after)), _MIN_OVERLAP_WORDS - 1, -1):
        if before[-size:] == after[:size]:
            return size
    return 0


def _contains(outer: list[str], inner: list[str]) -> bool:
    if not inner or len(inner) > len(outer):
        return False
    return f" {' '.join(inner)} " in f" {' '.join(outer)} "


def check_citations(text: str, shown: frozenset[int]) -> tuple[str, list[int]]:
    """``text`` with citations of passages not in ``shown`` removed, and the valid numbers in order of first
    appearance. ``[1, 2]`` is kept as ``[1][2]``."""
    cited: list[int] = []

    def keep(match: re.Match[str]) -> str:
        numbers = [int(n) for n in match.group(1).split(",")]
        valid = [n for n in numbers if n in shown]
        for n in valid:
            if n not in cited:
                cited.append(n)
        return "".join(f"[{n}]" for n in valid)

    cleaned = _CITATION.sub(keep, text)
    return re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", cleaned)).strip(), cited


def is_abstention(text: str) -> bool:
    """Whether the model used the abstention sentence (or wrote nothing)."""
    normalized = " ".join(text.lower().split()).strip("\"' ")
    return not normalized or normalized.startswith(ABSTENTION_TEXT.lower().rstrip("."))


class CitationStreamFilter:
    """Applies ``check_citations`` to a stream of deltas: text is passed on at once, except a possible
    citation (``[`` up to its ``]``), which is held until it is complete and then checked."""

    _MAX_HELD = 24

    def __init__(self, shown: frozenset[int]) -> None:
        self._shown = shown
        self._held = ""

    def feed(self, delta: str) -> str:
        out: list[str] = []
        for ch in delta:
            if self._held:
                self._held += ch
                if ch == "]":
                    out.append(self._release())
                elif not (ch.isdigit() or ch in ", ") or len(self._held) > self._MAX_HELD:
                    out.append(self._held)
                    self._held = ""
            elif ch == "[":
                self._held = ch
            else:
                out.append(ch)
        return "".join(out)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _release(self) -> str:
        held, self._held = self._held, ""
        if not _CITATION.fullmatch(held):
            return held
        return check_citations(held, self._shown)[0]
