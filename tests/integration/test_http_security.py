"""Security headers on every response (API JSON, errors, the UI, metrics, a body refused by the middleware),
HSTS only behind TLS, and CORS: none by default, preflights of configured origins answered, others refused."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from fastapi.testclient import TestClient

from ragserve.api.app import create_app
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.settings import Settings

ALLOWED, REFUSED = "https://app.example.com", "https://evil.example"


def _check_common(headers: httpx.Headers) -> None:
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("referrer-policy") == "no-referrer"
    assert headers.get("x-frame-options") == "DENY"


def test_security_headers_on_every_response(client: TestClient) -> None:
    api = client.get("/v1/collections")
    assert api.status_code == 200
    _check_common(api.headers)
    assert api.headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in api.headers

    missing = client.get("/v1/documents/nope")
    assert missing.status_code == 404
    _check_common(missing.headers)
    assert missing.headers["cache-control"] == "no-store"

    page = client.get("/")
    assert page.status_code == 200
    _check_common(page.headers)
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-cache"  # the UI's own, kept
    assert page.headers.get_list("x-content-type-options") == ["nosniff"]  # not doubled
    asset = client.get("/ui/styles.css")
    _check_common(asset.headers)
    assert asset.headers["cache-control"] == "no-cache"

    metrics = client.get("/metrics")
    _check_common(metrics.headers)
    assert "cache-control" not in metrics.headers

    too_large = client.post("/v1/search", content=b"x", headers={"content-length": str(10**12)})
    assert too_large.status_code == 413
    _check_common(too_large.headers)
    assert too_large.headers["cache-control"] == "no-store"


def test_hsts_only_behind_tls(make_settings: Callable[..., Settings], embedder: OnnxEmbedder) -> None:
    settings = make_settings(headers={"behind_tls": True, "hsts_max_age_seconds": 600})
    with TestClient(create_app(settings, embedder)) as client:
        assert client.get("/health").headers["strict-transport-security"] == "max-age=600; includeSubDomains"
        assert client.get("/").headers["strict-transport-security"] == "max-age=600; includeSubDomains"


def _preflight(client: TestClient, origin: str, method: str = "PUT") -> httpx.Response:
    return client.options(
        "/v1/collections/x/settings",
        headers={
            "origin": origin,
            "access-control-request-method": method,
            "access-control-request-headers": "authorization, content-type",
        },
    )


def test_no_cors_headers_by_default(client: TestClient) -> None:
    preflight = _preflight(client, ALLOWED)
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers
    response = client.get("/v1/collections", headers={"origin": ALLOWED})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_cors_for_configured_origins(make_settings: Callable[..., Settings], embedder: OnnxEmbedder) -> None:
    settings = make_settings(
        cors={"allow_origins": [ALLOWED], "allow_methods": ["GET", "POST", "PUT"]},
        auth={"enabled": True, "key_pepper": "pepper-for-tests"},
    )
    with TestClient(create_app(settings, embedder)) as client:
        # A preflight carries no credentials: it is answered before authentication.
        allowed = _preflight(client, ALLOWED)
        assert allowed.status_code == 200
        headers = allowed.headers
        assert headers["access-control-allow-origin"] == ALLOWED
        assert "PUT" in headers["access-control-allow-methods"]
        assert "authorization" in headers["access-control-allow-headers"].lower()
        assert headers["access-control-max-age"] == "600"
        assert "access-control-allow-credentials" not in headers
        _check_common(headers)

        refused = _preflight(client, REFUSED)
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        assert _preflight(client, ALLOWED, method="DELETE").status_code == 400

        # Simple requests: the allowed origin may read the response (and its request id), others may not.
        response = client.get("/v1/collections", headers={"origin": ALLOWED})
        assert response.status_code == 401
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
        other = client.get("/v1/collections", headers={"origin": REFUSED})
        assert "access-control-allow-origin" not in other.headers
