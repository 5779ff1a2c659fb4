"""The reranking seam over real HTTP: a small reranking server in a thread (the ``/v1/rerank`` shape of
llama.cpp's and vLLM's servers) scores passages by a rule the test knows, so its order is checkable."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ragserve.api.app import create_app
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.retrieval.rerank import HttpReranker, RerankError
from ragserve.settings import Settings
from tests.integration.helpers import ingest

DOCS = [
    {"text": "Cats are small domesticated carnivorous mammals that sleep most of the day."},
    {"text": "Kittens and cats sleep in warm places; a cat naps twelve hours."},
    {"text": "Rockets burn kerosene or liquid hydrogen with liquid oxygen to make thrust."},
]


class RerankServer:
    """Scores a passage by how often it holds ``word``; ``mode`` can break the replies."""

    def __init__(self) -> None:
        self.word = "kerosene"
        self.mode = "ok"
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, **body})
                if server.mode == "error":
                    self.send_response(500)
                    self.end_headers()
                    return
                docs = body["documents"] if server.mode == "ok" else body["documents"][:1]
                results = [
                    {"index": i, "relevance_score": float(doc.lower().count(server.word))} for i, doc in enumerate(docs)
                ]
                payload = json.dumps({"results": results}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def reranker_server() -> Iterator[RerankServer]:
    server = RerankServer()
    yield server
    server.close()


@pytest.fixture
def rerank_client(
    make_settings: Callable[..., Settings], embedder: OnnxEmbedder, reranker_server: RerankServer
) -> Iterator[TestClient]:
    settings = make_settings(reranker={"base_url": reranker_server.url, "model": "test-reranker"})
    with TestClient(create_app(settings, embedder)) as client:
        yield client


def _search(client: TestClient, query: str) -> dict[str, Any]:
    response = client.post("/v1/search", json={"query": query, "k": 3})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_reranker_reorders_the_fused_head(rerank_client: TestClient, reranker_server: RerankServer) -> None:
    ids = ingest(rerank_client, DOCS)["document_ids"]
    body = _search(rerank_client, "sleeping cats")
    # Fused ranking puts the cat documents first; the reranker's rule prefers the one that says "kerosene".
    assert body["results"][0]["document_id"] == ids[2]
    assert body["results"][0]["score"] == 1.0
    assert body["degraded"] is False
    (request,) = reranker_server.requests
    assert request["path"] == "/v1/rerank"
    assert request["model"] == "test-reranker"
    assert request["query"] == "sleeping cats"
    assert len(request["documents"]) == 3
    # A rule that scores "nap" puts the napping-cat document first.
    reranker_server.word = "nap"
    assert _search(rerank_client, "sleeping cats")["results"][0]["document_id"] == ids[1]


@pytest.mark.parametrize("mode", ["error", "partial"])
def test_a_failing_reranker_degrades_to_the_fused_ranking(
    rerank_client: TestClient, reranker_server: RerankServer, mode: str
) -> None:
    ingest(rerank_client, DOCS)
    reranker_server.mode = mode
    body = _search(rerank_client, "sleeping cats")
    assert body["degraded"] is True
    assert "cat" in body["results"][0]["text"].lower()


def test_http_reranker_reports_bad_replies(reranker_server: RerankServer) -> None:
    reranker = HttpReranker(reranker_server.url, "m", timeout_seconds=5)
    try:
        assert reranker.score("q", ["kerosene kerosene", "none"]) == [2.0, 0.0]
        assert reranker.score("q", []) == []
        reranker_server.mode = "partial"
        with pytest.raises(RerankError, match="scored 1 of 2 passages"):
            reranker.score("q", ["a", "b"])
        reranker_server.mode = "error"
        with pytest.raises(RerankError, match="the reranker failed"):
            reranker.score("q", ["a"])
    finally:
        reranker.close()
