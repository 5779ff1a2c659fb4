"""The whole API on the PostgreSQL backend (``store.backend=postgres``), with the real model, on the SciFact
slice: ingestion, the three search modes, answers, deletion, and an index version built, gated and promoted.
It proves the service wiring: nothing of the embedded backend (lock, database file, HNSW files) is used."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ragserve.api.app import create_app
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.evaluation import ndcg_at, read_corpus, read_queries
from ragserve.settings import Settings
from tests.conftest import FIXTURES
from tests.integration.helpers import ingest

pytestmark = pytest.mark.slow
SLICE = FIXTURES / "scifact_slice"
COLLECTION = "scifact"


def _search(client: TestClient, query: str, mode: str, **extra: Any) -> dict[str, Any]:
    body = {"query": query, "collection": COLLECTION, "k": 10, "mode": mode, **extra}
    response = client.post("/v1/search", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _ndcg(client: TestClient, mode: str) -> float:
    """Mean nDCG@10 of the slice's queries, documents ranked by their best chunk."""
    queries, qrels = read_queries(SLICE, "test")
    scores = []
    for qid, text in queries.items():
        ranked: dict[str, None] = {}
        for hit in _search(client, text, mode, k=50)["results"]:
            ranked.setdefault(hit["external_id"], None)
        scores.append(ndcg_at(list(ranked), qrels[qid]))
    return sum(scores) / len(scores)


def _wait_built(client: TestClient, number: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        versions = client.get(f"/v1/collections/{COLLECTION}/index").json()["versions"]
        (version,) = (v for v in versions if v["version"] == number)
        if version["state"] != "building":
            assert version["state"] == "ready", version
            return
        time.sleep(0.2)
    raise AssertionError(f"version {number} did not finish building")


def test_the_api_runs_on_postgres(
    make_settings: Callable[..., Settings], embedder: OnnxEmbedder, postgres_url: str
) -> None:
    settings = make_settings(store={"backend": "postgres", "postgres_url": postgres_url})
    documents = [
        {"external_id": d.id, "title": d.title, "text": d.text, "metadata": {"part": i % 4}}
        for i, d in enumerate(read_corpus(SLICE))
    ]
    with TestClient(create_app(settings, embedder)) as client:
        for start in range(0, len(documents), 100):
            job = ingest(client, documents[start : start + 100], COLLECTION)
            assert job["status"] == "succeeded", job["errors"]
        assert client.get("/ready").status_code == 200

        # Each mode ranks the slice about as well as the embedded backend does (its own tests check those).
        ndcg = {mode: _ndcg(client, mode) for mode in ("keyword", "dense", "hybrid")}
        assert ndcg["keyword"] > 0.6, ndcg
        assert ndcg["dense"] > 0.6, ndcg
        assert ndcg["hybrid"] >= max(ndcg["keyword"], ndcg["dense"]) - 0.05, ndcg

        # Filters are applied in the SQL of both halves.
        filtered = _search(client, "stem cells", "hybrid", filters={"part": 1})["results"]
        assert filtered
        assert {hit["metadata"]["part"] for hit in filtered} == {1}

        answer = client.post(
            "/v1/answer",
            json={
                "question": "Which nanoparticles are used for stem cell labeling and tracking?",
                "collection": COLLECTION,
            },
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["citations"]

        # Deleting a document takes it out of both halves at once.
        top = _search(client, documents[0]["title"], "hybrid")["results"][0]
        assert top["external_id"] == documents[0]["external_id"]
        assert client.delete(f"/v1/documents/{top['document_id']}").status_code == 204
        assert client.get(f"/v1/documents/{top['document_id']}").status_code == 404
        for mode in ("keyword", "dense"):
            hits = _search(client, documents[0]["title"], mode)["results"]
            assert documents[0]["external_id"] not in {hit["external_id"] for hit in hits}

        # An index version with other chunking is built, passes the golden-set gate and is promoted.
        queries, qrels = read_queries(SLICE, "test")
        golden = client.put(f"/v1/collections/{COLLECTION}/golden", json={"queries": queries, "qrels": qrels})
        assert golden.status_code == 204, golden.text
        created = client.post(
            f"/v1/collections/{COLLECTION}/index/versions", json={"max_tokens": 96, "overlap_tokens": 16}
        )
        assert created.status_code == 202, created.text
        _wait_built(client, 2)
        promoted = client.post(f"/v1/collections/{COLLECTION}/index/promote", json={"version": 2})
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["gate"]["passed"] is True
        assert _search(client, queries[next(iter(queries))], "hybrid")["index_version"] == 2
        rolled = client.post(f"/v1/collections/{COLLECTION}/index/rollback")
        assert rolled.json()["active"] == 1

    # The embedded backend's files were never made: PostgreSQL holds everything.
    assert not settings.database_path.exists()
    assert not settings.index_dir.exists()
    assert not (settings.data_dir / "ragserve.lock").exists()


def test_two_services_share_one_database(
    make_settings: Callable[..., Settings], embedder: OnnxEmbedder, postgres_url: str
) -> None:
    """Unlike the data directory of the embedded backend, a database serves several processes at once."""
    settings = make_settings(store={"backend": "postgres", "postgres_url": postgres_url})
    with TestClient(create_app(settings, embedder)) as first, TestClient(create_app(settings, embedder)) as second:
        job = ingest(first, [{"external_id": "z", "text": "Zebra stripes confuse biting flies."}], COLLECTION)
        assert job["status"] == "succeeded"
        hits = _search(second, "zebra flies", "hybrid")["results"]
        assert [hit["external_id"] for hit in hits] == ["z"]
