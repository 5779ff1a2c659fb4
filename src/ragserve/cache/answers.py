"""What makes two answer requests the same, and how a cached answer is stored."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from ragserve.domain import Answer, Citation, IndexRoute, SearchFilters

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class AnswerKey:
    """``exact``: the key of this question's answer. ``scope``: everything that key holds but the question,
    the only answers a similar question may be served from. ``question``: the text as asked, stripped (what
    its query vector is computed from)."""

    exact: str
    scope: str
    question: str


def answer_key(
    question: str,
    collection: str,
    k: int,
    filters: SearchFilters,
    route: IndexRoute,
    generation: str,
    scope: str = "",
) -> AnswerKey:
    """The cache key of an answer: the normalised question, where and how it was retrieved (collection, k,
    filters, the index versions queries go to), how it was generated (providers, prompt version), and the
    caller's scope (tenant and permissions, once they exist)."""
    versions = [route.active.version, None if route.canary is None else route.canary.version, route.canary_share]
    parts = [collection, k, [[key, value] for key, value in filters.conditions], versions, generation, scope]
    scope_key = _digest(parts)
    return AnswerKey(_digest([_SPACE.sub(" ", question.strip().casefold()), scope_key]), scope_key, question.strip())


def _digest(parts: list[Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """An answer from the cache: ``tokens`` the LLM tokens it cost when it was generated (0 for extractive
    answers); ``similarity`` the cosine similarity of its question to the one asked (semantic matches only)."""

    answer: Answer
    tokens: int = 0
    similarity: float | None = None


def encode_entry(answer: Answer, tokens: int) -> str:
    return json.dumps({"answer": asdict(answer), "tokens": tokens})


def decode_entry(text: str | bytes) -> CachedAnswer:
    """Also reads entries written before they had a token count (a bare answer)."""
    data: dict[str, Any] = json.loads(text)
    if "answer" not in data:
        return CachedAnswer(_answer(data))
    return CachedAnswer(_answer(data["answer"]), int(data.get("tokens", 0)))


def _answer(data: dict[str, Any]) -> Answer:
    citations = tuple(Citation(**c) for c in data["citations"])
    return Answer(text=data["text"], abstained=data["abstained"], citations=citations, generator=data["generator"])
