"""A collection whose index is kept at int8 or binary precision, through the HTTP API with authentication on:
searches answer with full-precision inner products (what fusion expects at any precision), metadata filters
and document ACLs are pre-filters (a restricted document never shows, and nothing readable is lost), and a new
index version can be built at another precision."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ragserve.api.app import create_app
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.security.auth import create_key
from ragserve.settings import Settings
from ragserve.stores.hnsw import index_path
from tests.integration.helpers import ingest

pytestmark = pytest.mark.slow

COLLECTION = "notes"
SECRET = "The merger with Globex closes in March; the board approved a price of 4.2 billion dollars."
DOCUMENTS = [
    ("Zebra stripes confuse biting flies, a field study of striped horse coats found.", "biology"),
    ("Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.", "biology"),
    ("The quarterly budget covers hiring, travel and the new office lease.", "finance"),
    ("Interest rates rose again, and bond prices fell across the market.", "finance"),
    ("Mergers and acquisitions slowed this year as financing grew costly.", "finance"),
]
QUERY = "When does the Globex merger close and at what price?"


class Api:
    def __init__(self, client: TestClient, precision: str) -> None:
        self.client, self.precision = client, precision
        app: Any = client.app
        self.service = app.state.service
        self.headers: dict[str, dict[str, str]] = {}
        callers = (("admin", ["query", "ingest", "admin"], None), ("u1", ["query"], "u1"), ("u2", ["query"], "u2"))
        for name, scopes, user in callers:
            secret, _ = create_key(
                self.service.stores.keys, app.state.authenticator.pepper, name, "t", scopes, None, user
            )
            self.headers[name] = {"authorization": f"Bearer {secret}"}

    def search(self, who: str, mode: str, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        body = {"query": QUERY, "collection": COLLECTION, "k": 10, "mode": mode, "filters": filters}
        response = self.client.post("/v1/search", json=body, headers=self.headers[who])
        assert response.status_code == 200, response.text
        return list(response.json()["results"])


@pytest.fixture(params=["int8", "binary"])
def api(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], embedder: OnnxEmbedder
) -> Iterator[Api]:
    settings = make_settings(auth={"enabled": True, "key_pepper": "p"}, vector_index={"precision": request.param})
    with TestClient(create_app(settings, embedder)) as client:
        made = Api(client, request.param)
        docs = [
            {"text": text, "title": f"Doc {i}", "metadata": {"topic": topic}}
            for i, (text, topic) in enumerate(DOCUMENTS)
        ]
        docs.append(
            {"text": SECRET, "title": "Board minutes", "metadata": {"topic": "finance"}, "acl": {"users": ["u1"]}}
        )
        assert ingest(client, docs, COLLECTION, made.headers["admin"])["status"] == "succeeded"
        yield made


def test_dense_scores_are_full_precision_inner_products(api: Api, embedder: OnnxEmbedder) -> None:
    service = api.service
    (version,) = service.versions.list_versions(service.store.get_collection(COLLECTION, "t").id)
    assert version.config.precision in ("int8", "binary")
    service.index.flush()
    assert index_path(service.settings.index_dir, version.index_id, version.config.precision).exists()
    hits = api.search("u1", "dense")
    assert hits[0]["text"] == SECRET
    query = embedder.embed([QUERY], kind="query")[0]
    stored = service.store.chunk_vectors([h["chunk_id"] for h in hits])
    assert [h["score"] for h in hits] == pytest.approx((stored @ query).tolist(), abs=1e-5)


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_acl_and_metadata_filters_are_pre_filters(api: Api, mode: str) -> None:
    readable = {text for text, _ in DOCUMENTS}
    shown = [h["text"] for h in api.search("u2", mode)]
    assert SECRET not in shown
    assert set(shown) == readable  # every readable chunk, though the nearest one was filtered out
    finance = [h["text"] for h in api.search("u2", mode, {"topic": "finance"})]
    assert set(finance) == {text for text, topic in DOCUMENTS if topic == "finance"}
    assert api.search("u1", mode, {"topic": "finance"})[0]["text"] == SECRET


def test_a_new_version_is_built_at_the_precision_asked(api: Api) -> None:
    client, headers = api.client, api.headers["admin"]
    url = f"/v1/collections/{COLLECTION}/index/versions"
    assert client.post(url, json={"precision": "int4"}, headers=headers).status_code == 422
    response = client.post(url, json={"precision": "f32"}, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["precision"] == "f32"
    index_url = f"/v1/collections/{COLLECTION}/index"
    deadline = time.monotonic() + 120
    while client.get(index_url, headers=headers).json()["versions"][1]["state"] == "building":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    versions = client.get(index_url, headers=headers).json()["versions"]
    assert [(v["version"], v["state"], v["precision"]) for v in versions] == [
        (1, "ready", api.precision),
        (2, "ready", "f32"),
    ]
    # The f32 version answers with the same scores as the quantized one: fusion sees one scale.
    quantized = api.search("u1", "dense")
    canary = client.put(f"{index_url}/canary", json={"version": 2, "share": 1.0}, headers=headers)
    assert canary.status_code == 200, canary.text
    full = api.search("u1", "dense")
    assert [(h["text"], round(h["score"], 5)) for h in full] == [(h["text"], round(h["score"], 5)) for h in quantized]
