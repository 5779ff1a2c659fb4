"""Document-level fusion and dense feedback through the search API, with the real model and the embedded store."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.integration.helpers import ingest

# Long enough to be split into several chunks: the document-level view matters only then.
LONG = " ".join(
    [
        "Orchard keeping: apple trees need pruning in winter and thinning of fruitlets in early summer.",
        "Cider makers press the apples in autumn; the juice ferments slowly in cool cellars.",
        "Bees pollinate the blossom in spring, so keepers avoid spraying while the trees flower.",
    ]
    * 12
)
DOCS = [
    {"text": LONG, "title": "Orchard keeping"},
    {"text": "Rockets burn kerosene or liquid hydrogen with liquid oxygen to make thrust."},
    {"text": "Cats are small domesticated carnivorous mammals that sleep most of the day."},
]


def _search(client: TestClient, **body: object) -> list[dict[str, Any]]:
    response = client.post("/v1/search", json={"collection": "fusion", "k": 20, **body})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def _settings(client: TestClient, **overrides: object) -> None:
    response = client.put("/v1/collections/fusion/settings", json=overrides)
    assert response.status_code == 200, response.text


def test_document_weight_one_gives_a_documents_chunks_its_fused_score(client: TestClient) -> None:
    ids = ingest(client, DOCS, collection="fusion")["document_ids"]
    _settings(client, document_weight=1.0, dense_feedback_chunks=0)
    results = _search(client, query="when are apples pressed for cider")
    orchard = [r for r in results if r["document_id"] == ids[0]]
    assert len(orchard) >= 2, "the long document was not split into several matching chunks"
    # Every chunk of a document carries the document's fused score, so they rank together, first here.
    assert {r["score"] for r in orchard} == {orchard[0]["score"]}
    assert results[0]["document_id"] == ids[0]
    # Weight 0 is chunk-level fusion: the chunks' own scores differ again.
    _settings(client, document_weight=0.0)
    chunk_level = [r for r in _search(client, query="when are apples pressed for cider") if r["document_id"] == ids[0]]
    assert len({r["score"] for r in chunk_level}) > 1


def test_dense_feedback_searches_again_from_a_moved_query(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    ingest(client, DOCS, collection="fusion")
    index = client.app.state.service.retriever._index  # type: ignore[attr-defined]
    queries: list[np.ndarray] = []
    original = index.search

    def recording(index_id: str, vector: np.ndarray, k: int) -> Any:
        queries.append(np.array(vector))
        return original(index_id, vector, k)

    monkeypatch.setattr(index, "search", recording)
    _settings(client, dense_feedback_chunks=3, dense_feedback_weight=0.5)
    assert _search(client, query="cider apples")
    first, moved = queries
    assert np.linalg.norm(moved) == pytest.approx(1.0, abs=1e-5)
    assert float(first @ moved) < 0.9999  # moved towards the best chunks, not the same query again
    queries.clear()
    _settings(client, dense_feedback_chunks=0)
    assert _search(client, query="cider apples")
    assert len(queries) == 1
    queries.clear()
    assert _search(client, query="cider apples", mode="dense")
    assert len(queries) == 1  # dense mode has no fusion to take feedback from
