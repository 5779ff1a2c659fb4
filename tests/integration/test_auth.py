"""Authentication through the API: API keys with scopes (created by an admin, revoked at once), bearer JWTs
verified against a JWKS served over HTTP, and the rule that only loopback may run without authentication."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from ragserve.api.app import create_app
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.security.auth import auth_required, create_key
from ragserve.settings import Settings

ISSUER, AUDIENCE = "https://idp.example", "ragserve"
SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Jwks:
    """An identity provider's JWKS endpoint on a local port."""

    def __init__(self) -> None:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(SIGNING_KEY.public_key()))
        body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def jwks() -> Iterator[Jwks]:
    server = Jwks()
    yield server
    server.server.shutdown()
    server.server.server_close()


def token(key: Any = SIGNING_KEY, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "tenant": "acme", "scope": "query ingest"}
    body.update({"iat": now, "exp": now + 300}, **claims)
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture
def client(make_settings: Callable[..., Settings], embedder: OnnxEmbedder, jwks: Jwks) -> Iterator[TestClient]:
    auth = {
        "enabled": True,
        "key_pepper": "pepper-for-tests",
        "jwt": {"jwks_url": jwks.url, "issuer": ISSUER, "audience": AUDIENCE},
    }
    with TestClient(create_app(make_settings(auth=auth), embedder)) as test_client:
        yield test_client


def _admin(client: TestClient) -> dict[str, str]:
    service = client.app.state.service  # type: ignore[attr-defined]
    secret, _ = create_key(
        service.stores.keys,
        client.app.state.authenticator.pepper,
        "root",
        "acme",
        ["admin"],
        None,  # type: ignore[attr-defined]
    )
    return {"authorization": f"Bearer {secret}"}


def test_api_keys_with_scopes(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    denied = client.post("/v1/search", json={"query": "leave"})
    assert denied.status_code == 401
    assert denied.json()["error"]["code"] == "unauthorized"
    assert "Authorization: Bearer" in denied.json()["error"]["message"]

    admin = _admin(client)
    assert client.post("/v1/search", json={"query": "leave"}, headers=admin).status_code == 403
    created = client.post("/v1/keys", json={"name": "app", "scopes": ["query"]}, headers=admin)
    assert created.status_code == 201, created.text
    query_key = {"authorization": f"Bearer {created.json()['key']}"}
    info = created.json()["info"]
    assert (info["tenant"], info["scopes"], info["revoked_at"]) == ("acme", ["query"], None)

    assert client.post("/v1/search", json={"query": "leave"}, headers=query_key).status_code == 200
    forbidden = client.post("/v1/documents", json={"documents": [{"text": "x"}]}, headers=query_key)
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "forbidden"
    assert client.get("/v1/keys", headers=query_key).status_code == 403
    listed = client.get("/v1/keys", headers=admin).json()["keys"]
    assert {k["id"] for k in listed} >= {info["id"]}
    assert all("key" not in k for k in listed)

    assert client.delete(f"/v1/keys/{info['id']}", headers=admin).status_code == 200
    assert client.post("/v1/search", json={"query": "leave"}, headers=query_key).status_code == 401
    bad_scope = client.post("/v1/keys", json={"name": "x", "scopes": ["root"]}, headers=admin)
    assert bad_scope.status_code == 400


def test_bearer_jwts_from_the_identity_provider(client: TestClient) -> None:
    user = {"authorization": f"Bearer {token()}"}
    response = client.post("/v1/documents", json={"documents": [{"text": "Paid leave is 25 days."}]}, headers=user)
    assert response.status_code == 202, response.text
    job = client.get(f"/v1/jobs/{response.json()['job_id']}", headers=user)
    assert job.status_code == 200
    assert wait_for_job_with(client, response.json()["job_id"], user)["status"] == "succeeded"
    assert client.post("/v1/search", json={"query": "leave"}, headers=user).status_code == 200
    assert client.get("/v1/dead-letters", headers=user).status_code == 403  # no admin scope
    for bad in (
        token(exp=int(time.time()) - 120),
        token(aud="someone-else"),
        token(iss="https://evil.example"),
        token(key=OTHER_KEY),
        token(tenant=None),
    ):
        refused = client.post("/v1/search", json={"query": "leave"}, headers={"authorization": f"Bearer {bad}"})
        assert refused.status_code == 401, bad


def wait_for_job_with(client: TestClient, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed", "partial"):
            return job
        time.sleep(0.05)
    raise AssertionError("the job did not finish")


@pytest.mark.parametrize(
    ("host", "enabled", "required"),
    [
        ("127.0.0.1", None, False),
        ("::1", None, False),
        ("localhost", None, False),
        ("0.0.0.0", None, True),
        ("10.1.2.3", None, True),
        ("0.0.0.0", False, False),
        ("127.0.0.1", True, True),
    ],
)
def test_only_loopback_runs_without_authentication_by_default(host: str, enabled: bool | None, required: bool) -> None:
    settings = Settings(server={"host": host}, auth={"enabled": enabled})  # type: ignore[arg-type]
    assert auth_required(settings) is required
