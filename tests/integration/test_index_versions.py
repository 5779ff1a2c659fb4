"""Index versions end to end through the API, on the SciFact slice: a second version with other chunking is
built while queries run on the first, canaried at 50 %, promoted atomically, rolled back, and a deliberately
worse version is refused by the golden-set gate."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from ragserve.domain import SearchFilters
from ragserve.evaluation import read_corpus, read_queries
from tests.conftest import FIXTURES
from tests.integration.helpers import ingest

pytestmark = pytest.mark.slow
SLICE = FIXTURES / "scifact_slice"
COLLECTION = "scifact"
ZEBRA = "Zebra stripes confuse biting flies, a field study of striped horse coats found."


class QueryLoad:
    """Searches the golden queries in a loop in a background thread, recording every response."""

    def __init__(self, client: TestClient, queries: list[str]) -> None:
        self._client, self._queries = client, queries
        self.responses: list[tuple[int, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            body = {"query": self._queries[i % len(self._queries)], "collection": COLLECTION, "k": 10}
            response = self._client.post("/v1/search", json=body)
            self.responses.append((response.status_code, response.json()))
            i += 1

    def __enter__(self) -> QueryLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _index(client: TestClient) -> dict[str, Any]:
    response = client.get(f"/v1/collections/{COLLECTION}/index")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _build(client: TestClient, **config: int) -> int:
    response = client.post(f"/v1/collections/{COLLECTION}/index/versions", json=config)
    assert response.status_code == 202, response.text
    number = int(response.json()["version"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        (version,) = (v for v in _index(client)["versions"] if v["version"] == number)
        if version["state"] != "building":
            assert version["state"] == "ready", version
            return number
        time.sleep(0.2)
    raise AssertionError(f"version {number} did not finish building")


def _search(client: TestClient, query: str) -> dict[str, Any]:
    response = client.post("/v1/search", json={"query": query, "collection": COLLECTION, "k": 10})
    assert response.status_code == 200, response.text
    return dict(response.json())


def _chunk_ids(client: TestClient) -> dict[int, set[int]]:
    """Chunk ids of each version (read from the store: the API shows only the active version's)."""
    service = client.app.state.service  # type: ignore[attr-defined]
    collection_id = service.store.get_collection(COLLECTION).id
    return {
        v.version: set(service.store.chunk_ids(v.index_id, SearchFilters()))
        for v in service.versions.list_versions(collection_id)
    }


def _scramble_vectors(client: TestClient, number: int) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]
    collection_id = service.store.get_collection(COLLECTION).id
    (version,) = (v for v in service.versions.list_versions(collection_id) if v.version == number)
    ids = sorted(service.store.chunk_ids(version.index_id, SearchFilters()))
    vectors = np.random.default_rng(7).standard_normal((len(ids), service.embedder.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    service.index.upsert(version.index_id, ids, vectors)


def test_build_canary_promote_rollback_and_gate(client: TestClient) -> None:
    documents = [{"external_id": d.id, "title": d.title, "text": d.text} for d in read_corpus(SLICE)]
    for start in range(0, len(documents), 100):
        assert ingest(client, documents[start : start + 100], COLLECTION)["status"] == "succeeded"
    queries, qrels = read_queries(SLICE, "test")
    golden = client.put(f"/v1/collections/{COLLECTION}/golden", json={"queries": queries, "qrels": qrels})
    assert golden.status_code == 204, golden.text
    texts = list(queries.values())

    # Version 2 (smaller chunks) builds while queries run on version 1, and a document ingested meanwhile
    # reaches both versions.
    with QueryLoad(client, texts) as load:
        zebra = ingest(client, [{"external_id": "zebra", "text": ZEBRA}], COLLECTION)
        assert zebra["status"] == "succeeded"
        v2 = _build(client, max_tokens=96, overlap_tokens=16)
    assert v2 == 2
    assert len(load.responses) >= 10
    assert {status for status, _ in load.responses} == {200}
    assert {body["index_version"] for _, body in load.responses} == {1}
    state = _index(client)
    assert (state["active"], state["canary"]) == (1, None)
    (built,) = (v for v in state["versions"] if v["version"] == 2)
    assert built["built_documents"] == built["total_documents"] >= len(documents)
    ids = _chunk_ids(client)
    assert ids[1].isdisjoint(ids[2])
    assert len(ids[2]) > len(ids[1])  # smaller chunks: more of them

    # A 50 % canary splits the queries within ±10 %.
    canary = client.put(f"/v1/collections/{COLLECTION}/index/canary", json={"version": 2, "share": 0.5})
    assert canary.status_code == 200, canary.text
    assert (canary.json()["canary"], canary.json()["canary_share"]) == (2, 0.5)
    served = Counter(_search(client, texts[i % len(texts)])["index_version"] for i in range(400))
    assert set(served) == {1, 2}
    assert 0.4 <= served[2] / 400 <= 0.6, served

    # Promotion passes the gate and switches at once; no query mixes the versions' chunks.
    with QueryLoad(client, texts) as load:
        time.sleep(0.3)
        promoted = client.post(f"/v1/collections/{COLLECTION}/index/promote", json={"version": 2})
        time.sleep(0.3)
    assert promoted.status_code == 200, promoted.text
    gate = promoted.json()["gate"]
    assert gate["passed"] is True
    assert gate["queries"] == len(queries)
    assert gate["candidate_ndcg_at_10"] >= gate["active_ndcg_at_10"] - gate["margin"]
    assert (promoted.json()["index"]["active"], promoted.json()["index"]["previous"]) == (2, 1)
    assert {status for status, _ in load.responses} == {200}
    seen_versions = set()
    for _, body in load.responses:
        version = body["index_version"]
        seen_versions.add(version)
        assert {hit["chunk_id"] for hit in body["results"]} <= ids[version]
    assert seen_versions == {1, 2}
    after = _search(client, "zebra stripes biting flies")
    assert after["index_version"] == 2
    assert after["results"][0]["external_id"] == "zebra"
    assert after["results"][0]["chunk_id"] in ids[2]

    # Rollback restores version 1.
    rolled = client.post(f"/v1/collections/{COLLECTION}/index/rollback")
    assert rolled.status_code == 200, rolled.text
    assert (rolled.json()["active"], rolled.json()["previous"]) == (1, 2)
    assert _search(client, texts[0])["index_version"] == 1

    # A deliberately worse version is refused by the gate, unless forced: version 3 is built like version 1,
    # then its vectors are replaced by random ones, as a broken embedding model would leave them.
    v3 = _build(client, max_tokens=200, overlap_tokens=40)
    _scramble_vectors(client, v3)
    refused = client.post(f"/v1/collections/{COLLECTION}/index/promote", json={"version": v3})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "conflict"
    assert "nDCG@10" in refused.json()["error"]["message"]
    assert _index(client)["active"] == 1
    forced = client.post(f"/v1/collections/{COLLECTION}/index/promote", json={"version": v3, "force": True})
    assert forced.status_code == 200, forced.text
    assert (forced.json()["gate"]["passed"], forced.json()["gate"]["forced"]) == (False, True)
    assert client.post(f"/v1/collections/{COLLECTION}/index/rollback").json()["active"] == 1

    # Routed versions cannot be deleted; others can, and their chunks go with them.
    assert client.delete(f"/v1/collections/{COLLECTION}/index/versions/1").status_code == 409
    assert client.delete(f"/v1/collections/{COLLECTION}/index/versions/{v3}").status_code == 204
    assert [v["version"] for v in _index(client)["versions"]] == [1, 2]
    assert v3 not in _chunk_ids(client)


def test_index_version_requests_are_validated(client: TestClient) -> None:
    ingest(client, [{"text": "one small document"}], "small")
    bad = client.post("/v1/collections/small/index/versions", json={"max_tokens": 64, "overlap_tokens": 64})
    assert bad.status_code == 400
    assert "overlap_tokens" in bad.json()["error"]["message"]
    other_model = client.post("/v1/collections/small/index/versions", json={"model": "bge-large"})
    assert other_model.status_code == 400
    assert client.post("/v1/collections/nope/index/versions", json={}).status_code == 404
    assert client.post("/v1/collections/small/index/promote", json={"version": 1}).status_code == 409
    assert client.post("/v1/collections/small/index/promote", json={"version": 9}).status_code == 404
    assert client.post("/v1/collections/small/index/rollback").status_code == 409
    empty_golden = client.put("/v1/collections/small/golden", json={"queries": {"q": "x"}, "qrels": {"q": {"d": 0}}})
    assert empty_golden.status_code == 400
