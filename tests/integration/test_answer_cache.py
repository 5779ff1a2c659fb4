"""The answer cache through the API: a repeated or reworded question is served from the cache, a different
one is not, and a change to a document the answer was built from (update or delete) makes the next one
fresh. Hits count the LLM tokens they saved. In-process and in Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from ragserve.api.app import create_app
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.embedding.protocol import EmbedKind, Vectors
from ragserve.settings import Settings
from tests.integration.canned_llm import CannedLLM
from tests.integration.helpers import ingest

LEAVE = "Employees get 25 days of paid leave per year. Leave requests go to the line manager."
LEAVE_CHANGED = "Employees get 30 days of paid leave per year. Leave requests go to the line manager."
EXPENSES = "Expense reports are due on the fifth working day of each month, with every receipt attached."
QUESTION = {"question": "How many days of paid leave do employees get?"}
REWORDED = {"question": "Tell me how many days of paid leave employees get."}  # cosine 0.967
DIFFERENT = {"question": "When are expense reports due?"}


def _lookups(result: str, match: str) -> float:
    labels = {"result": result, "match": match}
    return REGISTRY.get_sample_value("ragserve_answer_cache_lookups_total", labels) or 0.0


def _hits() -> float:
    return _lookups("hit", "exact") + _lookups("hit", "semantic")


def _saved_tokens(match: str) -> float:
    return REGISTRY.get_sample_value("ragserve_answer_cache_saved_tokens_total", {"match": match}) or 0.0


@pytest.fixture(params=["memory", "redis"])
def cached_client(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], embedder: OnnxEmbedder
) -> Iterator[TestClient]:
    overrides: dict[str, Any] = {}
    if request.param == "redis":
        overrides["redis"] = {"url": "redis://127.0.0.1:6379/0", "key_prefix": f"test-{uuid.uuid4().hex[:10]}"}
    with TestClient(create_app(make_settings(**overrides), embedder)) as client:
        yield client


def test_repeated_questions_are_cached_until_a_source_changes(cached_client: TestClient) -> None:
    ingest(cached_client, [{"external_id": "leave", "title": "Leave policy", "text": LEAVE}])
    first = cached_client.post("/v1/answer", json=QUESTION).json()
    assert "25 days" in first["answer"]
    hits, exact = _hits(), _lookups("hit", "exact")
    again = cached_client.post("/v1/answer", json={"question": "  how many days of PAID leave do employees get? "})
    assert again.json() == first
    assert (_hits(), _lookups("hit", "exact")) == (hits + 1, exact + 1)

    # The streamed form of a cached answer is served from the cache too.
    streamed = cached_client.post("/v1/answer", json={**QUESTION, "stream": True})
    assert streamed.status_code == 200
    assert "25 days" in streamed.text
    assert _hits() == hits + 2

    # The document changes: the next answer is built again, from the new text.
    ingest(cached_client, [{"external_id": "leave", "title": "Leave policy", "text": LEAVE_CHANGED}])
    changed = cached_client.post("/v1/answer", json=QUESTION).json()
    assert "30 days" in changed["answer"]
    assert _hits() == hits + 2

    # Deleting it removes the cached answer as well.
    document_id = changed["citations"][0]["document_id"]
    assert cached_client.delete(f"/v1/documents/{document_id}").status_code == 204
    after = cached_client.post("/v1/answer", json=QUESTION).json()
    assert "30 days" not in after["answer"]
    assert _hits() == hits + 2


def test_a_reworded_question_is_served_from_the_cache_and_a_different_one_is_not(
    cached_client: TestClient,
) -> None:
    ingest(
        cached_client,
        [
            {"external_id": "leave", "title": "Leave policy", "text": LEAVE},
            {"external_id": "expenses", "title": "Expenses", "text": EXPENSES},
        ],
    )
    first = cached_client.post("/v1/answer", json=QUESTION).json()
    semantic, misses = _lookups("hit", "semantic"), _lookups("miss", "none")

    reworded = cached_client.post("/v1/answer", json=REWORDED).json()
    assert reworded == first
    assert (_lookups("hit", "semantic"), _lookups("miss", "none")) == (semantic + 1, misses)

    different = cached_client.post("/v1/answer", json=DIFFERENT).json()
    assert "fifth working day" in different["answer"]
    assert (_lookups("hit", "semantic"), _lookups("miss", "none")) == (semantic + 1, misses + 1)

    # Another k is another scope: the reworded question is not served from the k=6 answer.
    cached_client.post("/v1/answer", json={**REWORDED, "k": 2})
    assert (_lookups("hit", "semantic"), _lookups("miss", "none")) == (semantic + 1, misses + 2)

    # The leave policy changes: the reworded question is answered afresh, from the new text.
    ingest(cached_client, [{"external_id": "leave", "title": "Leave policy", "text": LEAVE_CHANGED}])
    changed = cached_client.post("/v1/answer", json=REWORDED).json()
    assert "30 days" in changed["answer"]
    assert (_lookups("hit", "semantic"), _lookups("miss", "none")) == (semantic + 1, misses + 3)


def test_semantic_matching_can_be_turned_off(make_settings: Callable[..., Settings], embedder: OnnxEmbedder) -> None:
    with TestClient(create_app(make_settings(cache={"semantic": False}), embedder)) as client:
        ingest(client, [{"external_id": "leave", "title": "Leave policy", "text": LEAVE}])
        client.post("/v1/answer", json=QUESTION)
        semantic, misses = _lookups("hit", "semantic"), _lookups("miss", "none")
        client.post("/v1/answer", json=REWORDED)
        assert (_lookups("hit", "semantic"), _lookups("miss", "none")) == (semantic, misses + 1)


CANNED_ANSWER = "Employees get 25 days of paid leave per year [1]."


def test_hits_count_the_llm_tokens_their_answer_cost(
    make_settings: Callable[..., Settings], embedder: OnnxEmbedder
) -> None:
    with CannedLLM(CANNED_ANSWER, grade="0.9") as canned:
        provider = {"name": "canned", "kind": "openai_compat", "base_url": canned.base_url, "model": "m"}
        # Every answer is also judged by the same model: the judge's tokens are not the answer's.
        settings = make_settings(
            llm={"providers": [provider], "retry": {"max_attempts": 1}},
            observability={"judge_sample_rate": 1.0},
        )
        cost = 50 + len(CANNED_ANSWER.split())  # the canned server's usage: 50 prompt tokens, a token a word
        with TestClient(create_app(settings, embedder)) as client:
            ingest(client, [{"external_id": "leave", "title": "Leave policy", "text": LEAVE}])
            streamed = client.post("/v1/answer", json={**QUESTION, "stream": True})
            assert "25 days" in streamed.text
            exact, semantic = _saved_tokens("exact"), _saved_tokens("semantic")
            assert client.post("/v1/answer", json=QUESTION).json()["answer"] == CANNED_ANSWER
            assert client.post("/v1/answer", json=REWORDED).json()["answer"] == CANNED_ANSWER
            assert (_saved_tokens("exact"), _saved_tokens("semantic")) == (exact + cost, semantic + cost)


class QueryCounter:
    """The real model, counting the query texts it embeds."""

    def __init__(self, inner: OnnxEmbedder) -> None:
        self.inner = inner
        self.model_id, self.dimension = inner.model_id, inner.dimension
        self.queries: list[str] = []

    def embed(self, texts: Sequence[str], kind: EmbedKind = "document") -> Vectors:
        if kind == "query":
            self.queries.extend(texts)
        return self.inner.embed(texts, kind)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.inner.count_tokens(texts)


@pytest.mark.parametrize("stream", [False, True])
def test_a_question_that_misses_is_embedded_once(
    make_settings: Callable[..., Settings], embedder: OnnxEmbedder, stream: bool
) -> None:
    counter = QueryCounter(embedder)
    with TestClient(create_app(make_settings(), counter)) as client:
        ingest(client, [{"external_id": "leave", "title": "Leave policy", "text": LEAVE}])
        response = client.post("/v1/answer", json={**DIFFERENT, "stream": stream})
        assert response.status_code == 200
    # The cache's lookup, retrieval, the extractive generator and the cache's store all use one vector.
    assert counter.queries == [DIFFERENT["question"]]
