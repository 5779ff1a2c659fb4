"""The reranking stage: a model that reads the query and each passage together (a cross-encoder) reorders the
fused ranking's best chunks.

No cross-encoder ships offline with ragserve, so the stage is a seam: ``Reranker`` is what one must do, and
``HttpReranker`` calls a reranking server over HTTP, in the ``/v1/rerank`` shape that llama.cpp's server (with
``--reranking``), vLLM, Infinity and Jina/Cohere-compatible servers answer: ``{"model", "query", "documents"}`` in,
``{"results": [{"index", "relevance_score"}, ...]}`` out. ``rerank`` applies any reranker to a ranking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import httpx

from ragserve.errors import RagserveError
from ragserve.retrieval.fusion import Scored
from ragserve.settings import RerankerSettings


class RerankError(RagserveError):
    code = "rerank_failed"


class Reranker(Protocol):
    """Scores passages against a query (higher is more relevant); one score per passage, in order."""

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """Raises ``RerankError``."""
        ...

    def close(self) -> None: ...


class HttpReranker:
    """A reranking server's ``POST {base_url}/rerank``."""

    def __init__(self, base_url: str, model: str, timeout_seconds: float, api_key: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_seconds, headers=headers)
        self._model = model

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        body = {"model": self._model, "query": query, "documents": list(passages), "top_n": len(passages)}
        try:
            response = self._client.post("/rerank", json=body)
            response.raise_for_status()
            results = response.json()["results"]
            scores = {int(item["index"]): float(item["relevance_score"]) for item in results}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise RerankError(f"the reranker failed: {exc}") from exc
        if sorted(scores) != list(range(len(passages))):
            raise RerankError(f"the reranker scored {len(scores)} of {len(passages)} passages")
        return [scores[i] for i in range(len(passages))]

    def close(self) -> None:
        self._client.close()


def build_reranker(settings: RerankerSettings) -> Reranker | None:
    """The configured reranker, or None when ``reranker.base_url`` is unset."""
    if not settings.base_url:
        return None
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return HttpReranker(settings.base_url, settings.model, settings.timeout_seconds, key)


def rerank(ranking: Scored, texts: dict[int, str], scores: Sequence[float]) -> Scored:
    """``ranking`` with the chunks of ``texts`` (its head, in order) reordered by the reranker's ``scores`` and
    given them; the rest follows in fused order, scored below the reranked head."""
    head = [cid for cid, _ in ranking if cid in texts]
    if len(head) != len(scores):
        raise ValueError("one reranker score per reranked chunk")
    reranked = sorted(zip(head, scores, strict=True), key=lambda item: -item[1])
    floor = min(scores, default=0.0)
    tail = [cid for cid, _ in ranking if cid not in texts]
    return reranked + [(cid, floor - 1.0 - i * 1e-6) for i, cid in enumerate(tail)]
