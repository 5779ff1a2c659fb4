"""Every error status of API v1, each in the one JSON error shape."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from ragserve.api.app import create_app
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.settings import Settings
from tests.integration.helpers import ingest


def assert_error(response: object, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert set(error) == {"code", "message", "request_id"}
    assert error["message"]
    assert error["request_id"]
    if code is not None:
        assert error["code"] == code


@pytest.fixture
def small_client(make_settings: Callable[..., Settings], embedder: OnnxEmbedder) -> Iterator[TestClient]:
    settings = make_settings(limits={"max_upload_bytes": 1000, "max_request_bytes": 20_000})
    with TestClient(create_app(settings, embedder)) as client:
        yield client


def test_empty_query_is_400(client: TestClient) -> None:
    assert_error(client.post("/v1/search", json={"query": "   "}), 400, "empty_query")
    assert_error(client.post("/v1/answer", json={"question": ""}), 400, "empty_query")


def test_query_over_2000_characters_is_413(client: TestClient) -> None:
    assert_error(client.post("/v1/search", json={"query": "a" * 2001}), 413, "payload_too_large")
    assert_error(client.post("/v1/answer", json={"question": "b" * 2001}), 413, "payload_too_large")
    assert client.post("/v1/search", json={"query": "a" * 2000}).status_code == 200


def test_more_than_100_documents_is_413(client: TestClient) -> None:
    body = {"documents": [{"text": f"doc {i}"} for i in range(101)]}
    assert_error(client.post("/v1/documents", json=body), 413, "payload_too_large")
    assert client.get("/v1/documents").json()["total"] == 0


def test_upload_over_the_configured_size_is_413(small_client: TestClient) -> None:
    big = base64.b64encode(b"x" * 1001).decode()
    body = {"documents": [{"filename": "big.txt", "content_base64": big}]}
    assert_error(small_client.post("/v1/documents", json=body), 413, "payload_too_large")
    files = [("files", ("big.txt", b"y" * 1001))]
    assert_error(small_client.post("/v1/documents", files=files), 413, "payload_too_large")


def test_request_body_over_the_limit_is_413(small_client: TestClient) -> None:
    body = {"documents": [{"text": "z" * 30_000}]}
    assert_error(small_client.post("/v1/documents", json=body), 413, "payload_too_large")


def test_unsupported_file_type_is_415(client: TestClient) -> None:
    exe = base64.b64encode(b"MZ\x90\x00").decode()
    body = {"documents": [{"filename": "tool.exe", "content_base64": exe}]}
    assert_error(client.post("/v1/documents", json=body), 415, "unsupported_media_type")
    assert_error(client.post("/v1/documents", files=[("files", ("a.xyz", b"data"))]), 415)
    assert_error(client.post("/v1/documents", content=b"text", headers={"content-type": "text/plain"}), 415)


def test_malformed_json_is_400(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    assert_error(client.post("/v1/documents", content=b'{"documents": [', headers=headers), 400, "invalid_json")
    assert_error(client.post("/v1/search", content=b'{"query": ', headers=headers), 400, "invalid_json")


def test_invalid_utf8_is_400(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    bad = b'{"documents": [{"text": "caf\xe9"}]}'
    assert_error(client.post("/v1/documents", content=bad, headers=headers), 400)
    assert_error(client.post("/v1/search", content=b'{"query": "caf\xe9"}', headers=headers), 400)


def test_schema_violations_are_422(client: TestClient) -> None:
    assert_error(client.post("/v1/search", json={"query": "x", "k": 0}), 422, "validation_error")
    assert_error(client.post("/v1/search", json={"query": "x", "mode": "magic"}), 422, "validation_error")
    assert_error(client.post("/v1/documents", json={"documents": [{"txt": "typo"}]}), 422, "validation_error")
    assert_error(client.post("/v1/answer", json={"k": 3}), 422, "validation_error")


def test_document_without_text_or_content_is_400(client: TestClient) -> None:
    assert_error(client.post("/v1/documents", json={"documents": [{"title": "t"}]}), 400, "invalid_request")
    assert_error(client.post("/v1/documents", json={"documents": []}), 400, "invalid_request")
    bad64 = {"documents": [{"filename": "a.txt", "content_base64": "***"}]}
    assert_error(client.post("/v1/documents", json=bad64), 400, "invalid_request")


def test_bad_filter_key_is_400(client: TestClient) -> None:
    assert_error(client.post("/v1/search", json={"query": "x", "filters": {"a'b": 1}}), 400, "invalid_request")
    assert_error(client.post("/v1/search", json={"query": "x", "filters": {"tag": []}}), 400, "invalid_request")
    assert_error(client.post("/v1/answer", json={"question": "x", "filters": {"a b": 1}}), 400, "invalid_request")


def test_unknown_route_and_request_id_echo(client: TestClient) -> None:
    response = client.get("/v1/nothing-here", headers={"X-Request-ID": "abc-123"})
    assert_error(response, 404, "not_found")
    assert response.json()["error"]["request_id"] == "abc-123"
    assert response.headers["x-request-id"] == "abc-123"


def test_health_ready_metrics_and_docs(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": True, "index": True, "model": True, "capacity": True},
        "failed": [],
    }
    client.post("/v1/search", json={"query": "warm up"})
    metrics = client.get("/metrics").text
    assert 'ragserve_http_request_duration_seconds_count{method="POST",route="/v1/search",status="200"}' in metrics
    assert 'ragserve_stage_duration_seconds_count{stage="embed"}' in metrics or "ragserve_stage_duration" in metrics
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/v1/documents", "/v1/search", "/v1/answer", "/v1/jobs/{job_id}"} <= set(schema["paths"])


def test_ready_is_503_until_the_service_has_started(settings: Settings) -> None:
    # Without entering the client's context the lifespan never runs: nothing is loaded yet.
    client = TestClient(create_app(settings))
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {
        "status": "not_ready",
        "checks": {"database": False, "index": False, "model": False, "capacity": True},
        "failed": ["database", "index", "model"],
    }
    assert client.get("/health").status_code == 200
    assert_error(client.post("/v1/search", json={"query": "x"}), 503, "service_unavailable")


def test_an_unexpected_error_is_500_with_the_request_id_header(
    settings: Settings, embedder: OnnxEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(create_app(settings, embedder), raise_server_exceptions=False) as client:
        service = client.app.state.service  # type: ignore[attr-defined]

        async def broken(*args: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(service, "list_collections", broken)
        response = client.get("/v1/collections", headers={"X-Request-ID": "req-500"})
        generated = client.get("/v1/collections")
    assert_error(response, 500, "internal_error")
    assert response.json()["error"]["request_id"] == "req-500"
    assert response.headers["x-request-id"] == "req-500"
    assert_error(generated, 500, "internal_error")
    assert generated.headers["x-request-id"] == generated.json()["error"]["request_id"]


def test_a_document_offset_beyond_64_bits_is_422(client: TestClient) -> None:
    assert_error(client.get("/v1/documents", params={"offset": 2**63}), 422, "validation_error")
    assert client.get("/v1/documents", params={"offset": 2**63 - 1}).json()["documents"] == []


def test_a_golden_set_grade_too_large_for_ndcg_is_422(client: TestClient) -> None:
    ingest(client, [{"text": "Paid leave is 25 days a year.", "external_id": "leave"}], "small")
    golden = {"queries": {"q": "paid leave"}, "qrels": {"q": {"leave": 1024}}}
    assert_error(client.put("/v1/collections/small/golden", json=golden), 422, "validation_error")
    golden["qrels"] = {"q": {"leave": 100}}
    assert client.put("/v1/collections/small/golden", json=golden).status_code == 204
