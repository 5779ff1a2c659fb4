"""What makes two answer requests the same, and how a cached answer is stored."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict
from typing import Any

from ragserve.domain import Answer, Citation, IndexRoute, SearchFilters

_SPACE = re.compile(r"\s+")


def answer_key(
    question: str,
    collection: str,
    k: int,
    filters: SearchFilters,
    route: IndexRoute,
    generation: str,
    scope: str = "",
) -> str:
    """The cache key of an answer: the normalised question, where and how it was retrieved (collection, k,
    filters, the index versions queries go to), how it was generated (providers, prompt version), and the
    caller's scope (tenant and permissions, once they exist)."""
    versions = [route.active.version, None if route.canary is None else route.canary.version, route.canary_share]
    parts = [
        _SPACE.sub(" ", question.strip().casefold()),
        collection,
        k,
        [[key, value] for key, value in filters.conditions],
        versions,
        generation,
        scope,
    ]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def encode_answer(answer: Answer) -> str:
    return json.dumps(asdict(answer))


def decode_answer(text: str | bytes) -> Answer:
    data: dict[str, Any] = json.loads(text)
    citations = tuple(Citation(**c) for c in data["citations"])
    return Answer(text=data["text"], abstained=data["abstained"], citations=citations, generator=data["generator"])
