"""Per-collection retrieval settings: set over the API, used by the next search, validated, 404 when unknown."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.integration.helpers import ingest

DOCS = [
    {"text": "Cats are small domesticated carnivorous mammals that sleep most of the day."},
    {"text": "Rockets burn kerosene or liquid hydrogen with liquid oxygen to make thrust."},
    {"text": "Felines such as lions and house cats hunt at dawn and dusk."},
]


def _ids(client: TestClient, **body: object) -> list[int]:
    response = client.post("/v1/search", json={"collection": "pets", "query": "sleepy cat", **body})
    assert response.status_code == 200, response.text
    return [r["chunk_id"] for r in response.json()["results"]]


def test_overrides_change_the_next_search(client: TestClient) -> None:
    ingest(client, DOCS, collection="pets")
    initial = client.get("/v1/collections/pets/settings").json()
    assert initial["overrides"] == {
        "default_mode": None,
        "fusion": None,
        "hybrid_alpha": None,
        "rrf_k": None,
        "document_weight": None,
        "candidates": None,
        "feedback_chunks": None,
        "dense_feedback_chunks": None,
        "dense_feedback_weight": None,
        "feedback_terms": None,
        "feedback_max_postings": None,
        "feedback_weight": None,
        "feedback_from": None,
        "rerank_candidates": None,
    }
    assert initial["effective"]["default_mode"] == "hybrid"

    response = client.put("/v1/collections/pets/settings", json={"default_mode": "keyword"})
    assert response.status_code == 200
    assert response.json()["effective"]["default_mode"] == "keyword"
    result = client.post("/v1/search", json={"collection": "pets", "query": "sleepy cat"}).json()
    assert result["mode"] == "keyword"

    # alpha = 1 without dense feedback: the hybrid ranking is the dense ranking.
    client.put("/v1/collections/pets/settings", json={"hybrid_alpha": 1.0, "dense_feedback_chunks": 0})
    assert _ids(client, mode="hybrid") == _ids(client, mode="dense")
    assert client.post("/v1/search", json={"collection": "pets", "query": "x"}).json()["mode"] == "hybrid"

    # Other collections keep the service-wide settings.
    ingest(client, DOCS, collection="other")
    assert client.get("/v1/collections/other/settings").json()["effective"]["hybrid_alpha"] == 0.5


ORCHARD = [
    {"text": "Apple orchards grow cider fruit in autumn."},
    {"text": "Cider presses crush orchard fruit every autumn."},
    {"text": "Rockets burn kerosene or liquid hydrogen with liquid oxygen to make thrust."},
]


def test_keyword_feedback_finds_documents_without_the_query_words(client: TestClient) -> None:
    ids = ingest(client, ORCHARD, collection="orchard")["document_ids"]

    def found() -> list[str]:
        body = {"collection": "orchard", "query": "apple", "mode": "keyword"}
        response = client.post("/v1/search", json=body)
        assert response.status_code == 200, response.text
        return [r["document_id"] for r in response.json()["results"]]

    # On by default: the best chunk's other words (cider, orchard, fruit, autumn) find the press document,
    # ranked below the one that has the query word; the rocket document shares none. Off for the collection,
    # only the document with the query word is found.
    assert found() == ids[:2]
    assert client.put("/v1/collections/orchard/settings", json={"feedback_chunks": 0}).status_code == 200
    assert found() == ids[:1]
    assert client.put("/v1/collections/orchard/settings", json={"feedback_chunks": 5}).status_code == 200
    assert found() == ids[:2]
    # A postings bound below the expansion terms' chunk counts drops them all.
    assert client.put("/v1/collections/orchard/settings", json={"feedback_max_postings": 1}).status_code == 200
    assert found() == ids[:1]
    assert client.put("/v1/collections/orchard/settings", json={"feedback_max_postings": None}).status_code == 200
    assert client.put("/v1/collections/orchard/settings", json={"feedback_weight": 2}).status_code == 422
    assert client.put("/v1/collections/orchard/settings", json={"feedback_from": "dense"}).status_code == 422

    # Hybrid search takes its feedback chunks from the first fusion (the default) or from the keyword half.
    for source in ("fused", "keyword"):
        body = {"feedback_chunks": 5, "feedback_from": source}
        assert client.put("/v1/collections/orchard/settings", json=body).status_code == 200
        hybrid = client.post("/v1/search", json={"collection": "orchard", "query": "apple", "k": 3}).json()
        assert hybrid["results"][0]["document_id"] == ids[0], source


def test_invalid_and_unknown(client: TestClient) -> None:
    ingest(client, DOCS, collection="pets")
    bad = client.put("/v1/collections/pets/settings", json={"hybrid_alpha": 2})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "validation_error"
    assert client.put("/v1/collections/pets/settings", json={"typo": 1}).status_code == 422
    missing = client.put("/v1/collections/nope/settings", json={})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert client.get("/v1/collections/nope/settings").status_code == 404
