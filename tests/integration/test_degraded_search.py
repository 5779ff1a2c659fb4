"""Degraded mode: when one half of a hybrid search fails or times out, the other half answers."""

from __future__ import annotations

import sqlite3
import time
from typing import Any, NoReturn

import pytest
from fastapi.testclient import TestClient

from ragserve.errors import EmbeddingError
from tests.integration.helpers import ingest

DOCS = [
    {"text": "Cats are small domesticated carnivorous mammals that sleep most of the day."},
    {"text": "Rockets burn kerosene or liquid hydrogen with liquid oxygen to make thrust."},
]


def _degraded_count(client: TestClient, half: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'ragserve_retrieval_degraded_total{{failed="{half}"}}'):
            return float(line.split()[-1])
    return 0.0


def _search(client: TestClient, query: str) -> dict[str, Any]:
    response = client.post("/v1/search", json={"query": query})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_keyword_half_failing_answers_with_dense(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    ingest(client, DOCS)
    assert _search(client, "sleeping cats")["degraded"] is False

    def broken(*args: object) -> NoReturn:
        raise sqlite3.OperationalError("database disk image is malformed")

    before = _degraded_count(client, "keyword")
    monkeypatch.setattr(client.app.state.service.store, "keyword_search", broken)  # type: ignore[attr-defined]
    body = _search(client, "sleeping cats")
    assert body["degraded"] is True
    assert "Cats" in body["results"][0]["text"]
    assert _degraded_count(client, "keyword") == before + 1


def test_dense_half_failing_answers_with_keyword(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    ingest(client, DOCS)

    def broken(*args: object, **kwargs: object) -> NoReturn:
        raise EmbeddingError("onnxruntime inference failed")

    before = _degraded_count(client, "dense")
    monkeypatch.setattr(client.app.state.service.retriever._embedder, "embed", broken)  # type: ignore[attr-defined]
    body = _search(client, "rockets kerosene")
    assert body["degraded"] is True
    assert "Rockets" in body["results"][0]["text"]
    assert _degraded_count(client, "dense") == before + 1
    # A dense-only search has no other half: its error is reported.
    assert client.post("/v1/search", json={"query": "rockets", "mode": "dense"}).status_code == 500


def test_slow_half_is_dropped_after_the_timeout(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    ingest(client, DOCS)
    service = client.app.state.service  # type: ignore[attr-defined]
    monkeypatch.setattr(service.retriever._settings, "half_timeout_seconds", 0.2)
    original = service.store.keyword_search

    def slow(*args: Any) -> Any:
        time.sleep(1.0)
        return original(*args)

    monkeypatch.setattr(service.store, "keyword_search", slow)
    start = time.perf_counter()
    body = _search(client, "sleeping cats")
    assert time.perf_counter() - start < 0.9
    assert body["degraded"] is True
    assert body["results"]


def test_both_halves_failing_is_503(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    ingest(client, DOCS)
    service = client.app.state.service  # type: ignore[attr-defined]

    def broken(*args: object, **kwargs: object) -> NoReturn:
        raise EmbeddingError("down")

    monkeypatch.setattr(service.store, "keyword_search", broken)
    monkeypatch.setattr(service.retriever._embedder, "embed", broken)
    response = client.post("/v1/search", json={"query": "cats"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
