"""The answer cache through the API: a repeated question is served from the cache, and a change to a document
the answer was built from (update or delete) makes the next one fresh. In-process and in Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from ragserve.api.app import create_app
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.settings import Settings
from tests.integration.helpers import ingest

LEAVE = "Employees get 25 days of paid leave per year. Leave requests go to the line manager."
LEAVE_CHANGED = "Employees get 30 days of paid leave per year. Leave requests go to the line manager."
QUESTION = {"question": "How many days of paid leave do employees get?"}


def _hits() -> float:
    return REGISTRY.get_sample_value("ragserve_answer_cache_lookups_total", {"result": "hit"}) or 0.0


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
    hits = _hits()
    again = cached_client.post("/v1/answer", json={"question": "  how many days of PAID leave do employees get? "})
    assert again.json() == first
    assert _hits() == hits + 1

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
