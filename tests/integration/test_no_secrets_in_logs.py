"""No secret is ever written to a log. A real server process (JSON logs at debug level, PostgreSQL and Redis
URLs with passwords, an LLM provider with an API key, JWTs, a key pepper) and an app in this process with the
same settings serve API keys made with the command line and the API, bearer JWTs, answers from the LLM,
forged and revoked keys; every line the server wrote and every record logged here (at debug level) is then
searched for each secret. Settings errors, which print at start-up, do not echo their input either."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict
from typer.testing import CliRunner

from ragserve.api.app import create_app
from ragserve.cli import app as cli
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.observability.logging import JsonFormatter
from ragserve.settings import Settings
from tests.integration.canned_llm import CannedLLM
from tests.integration.server import free_port, start_server
from tests.integration.test_auth import AUDIENCE, ISSUER, Jwks, token

pytestmark = pytest.mark.slow
ANSWER = "Employees get 25 days of paid leave per year [1]."


@pytest.fixture(scope="module")
def jwks() -> Iterator[Jwks]:
    server = Jwks()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _postgres_uri(conninfo: str, password: str) -> str:
    """The test database as a URL with a password (the test server trusts local connections and ignores it)."""
    parts = conninfo_to_dict(conninfo)
    query = f"host={quote(str(parts['host']), safe='')}" + (f"&port={parts['port']}" if "port" in parts else "")
    return f"postgresql://{parts['user']}:{password}@/{parts['dbname']}?{query}"


def _leaked(secret: str, text: str, window: int = 10) -> str | None:
    """A piece of ``secret`` found in ``text``: a truncated echo leaks as surely as a whole one."""
    for start in range(len(secret) - window + 1):
        if secret[start : start + window] in text:
            return secret[start : start + window]
    return None


def _wait_for_job(client: httpx.Client | TestClient, job_id: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"] == "succeeded":
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not succeed")


def _exercise(client: httpx.Client | TestClient, admin_key: str, jwt: str, question: str) -> list[str]:
    """Everything that handles a credential; returns the credentials it made up or was given on the way."""
    admin = {"authorization": f"Bearer {admin_key}"}
    created = client.post("/v1/keys", json={"name": "app", "scopes": ["query", "ingest"]}, headers=admin)
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    user = {"authorization": f"Bearer {key}"}
    if isinstance(client, httpx.Client):  # documents once, in the shared database
        body = {"documents": [{"title": "Leave", "text": "Employees get 25 days of paid leave per year."}]}
        accepted = client.post("/v1/documents", json=body, headers=user)
        assert accepted.status_code == 202, accepted.text
        _wait_for_job(client, accepted.json()["job_id"], user)
    assert client.post("/v1/search", json={"query": "paid leave"}, headers=user).status_code == 200
    answer = client.post("/v1/answer", json={"question": question}, headers=user)
    assert answer.status_code == 200, answer.text
    assert answer.json()["generator"] == "canned"
    assert (
        client.post("/v1/search", json={"query": "leave"}, headers={"authorization": f"Bearer {jwt}"}).status_code
        == 200
    )
    forged = key[:-6] + ("AAAAAA" if not key.endswith("AAAAAA") else "BBBBBB")
    assert (
        client.post("/v1/search", json={"query": "x"}, headers={"authorization": f"Bearer {forged}"}).status_code == 401
    )
    assert client.delete(f"/v1/keys/{created.json()['info']['id']}", headers=admin).status_code == 200
    assert client.post("/v1/search", json={"query": "x"}, headers=user).status_code == 401
    assert client.get("/v1/audit", headers=admin).status_code == 200
    return [key, forged]


def test_no_secret_reaches_any_log(
    tmp_path: Path,
    model_cache: Path,
    embedder: OnnxEmbedder,
    postgres_url: str,
    jwks: Jwks,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    pg_password, redis_password = f"pg-{secrets.token_hex(12)}", f"redis-{secrets.token_hex(12)}"
    llm_key, pepper = f"sk-{secrets.token_hex(16)}", f"pepper-{secrets.token_hex(16)}"
    jwt = token()
    server_log = tmp_path / "server.log"
    with CannedLLM(ANSWER) as canned:
        provider = {"name": "canned", "kind": "openai_compat", "base_url": canned.base_url, "api_key": llm_key}
        env = {
            "RAGSERVE_DATA_DIR": str(tmp_path / "data"),
            "RAGSERVE_EMBEDDING__CACHE_DIR": str(model_cache),
            "RAGSERVE_STORE__BACKEND": "postgres",
            "RAGSERVE_STORE__POSTGRES_URL": _postgres_uri(postgres_url, pg_password),
            "RAGSERVE_REDIS__URL": f"redis://default:{redis_password}@127.0.0.1:6379/0",
            "RAGSERVE_REDIS__KEY_PREFIX": f"ragserve-test-secrets-{secrets.token_hex(4)}",
            "RAGSERVE_CACHE__ANSWER_TTL_SECONDS": "60",
            "RAGSERVE_LLM__PROVIDERS": json.dumps([provider]),
            "RAGSERVE_OBSERVABILITY__JUDGE_SAMPLE_RATE": "0",
            "RAGSERVE_AUTH__ENABLED": "true",
            "RAGSERVE_AUTH__KEY_PEPPER": pepper,
            "RAGSERVE_AUTH__JWT__JWKS_URL": jwks.url,
            "RAGSERVE_AUTH__JWT__ISSUER": ISSUER,
            "RAGSERVE_AUTH__JWT__AUDIENCE": AUDIENCE,
            "RAGSERVE_OBSERVABILITY__JSON_LOGS": "true",
            "RAGSERVE_SERVER__LOG_LEVEL": "debug",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        port = free_port()
        process = start_server(tmp_path / "server-data", port, model_cache, server_log, env)
        try:
            created = CliRunner().invoke(cli, ["keys", "create", "--tenant", "acme", "--scopes", "admin,ingest,query"])
            assert created.exit_code == 0, created.output
            cli_key = created.output.splitlines()[0]
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as remote:
                made = _exercise(remote, cli_key, jwt, "How many days of paid leave?")
            with TestClient(create_app(Settings(), embedder)) as local:
                made += _exercise(local, cli_key, jwt, "How much paid leave do employees get?")
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert canned.authorizations == [f"Bearer {llm_key}"] * 2  # the provider did get its key, twice

    written = server_log.read_text()
    lines = [json.loads(line) for line in written.splitlines() if line.startswith("{")]
    # The capture is real: debug records, the access log and the audit events are all in it.
    assert {"debug", "info"} <= {line["level"] for line in lines}
    assert any(line["logger"] == "uvicorn.access" for line in lines)
    assert {line["audit"]["action"] for line in lines if line["logger"] == "ragserve.audit"} >= {
        "key.create",
        "key.revoke",
        "documents.ingest",
        "auth.denied",
    }
    formatter = JsonFormatter()
    here = caplog.text + "\n".join(formatter.format(record) for record in caplog.records)
    assert any(record.name == "ragserve.audit" for record in caplog.records)
    assert any(record.levelno == logging.DEBUG for record in caplog.records)
    # An API key's id (rsk_<id>_...) is public and is logged on purpose; the rest of it is the secret.
    key_secrets = [key.split("_", 2)[2] for key in [cli_key, *made]]
    for secret in [pg_password, redis_password, llm_key, pepper, jwt, *key_secrets]:
        assert _leaked(secret, written) is None, f"a secret reached the server's log: {_leaked(secret, written)}"
        assert _leaked(secret, here) is None, f"a secret reached a log record: {_leaked(secret, here)}"


def test_a_refused_setting_is_named_but_not_echoed(tmp_path: Path) -> None:
    """Start-up errors print to standard error: the value refused (or its neighbours) may be a secret."""
    password, llm_key = f"pg-{secrets.token_hex(12)}", f"sk-{secrets.token_hex(16)}"
    env: dict[str, Any] = {
        **{name: value for name, value in os.environ.items() if not name.startswith("RAGSERVE_")},
        "RAGSERVE_DATA_DIR": str(tmp_path / "data"),
        "RAGSERVE_STORE__BACKEND": "postgres",
        "RAGSERVE_STORE__POSTGRES_URL": f"postgresql://app:{password}@db.invalid/ragserve",
        "RAGSERVE_STORE__POOL_MIN_SIZE": "5",
        "RAGSERVE_STORE__POOL_MAX_SIZE": "2",
        "RAGSERVE_LLM__PROVIDERS": json.dumps([{"name": "x", "kind": "openai_compat", "api_key": llm_key}]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "ragserve.cli", "keys", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "pool_min_size" in output
    assert "needs base_url" in output
    assert _leaked(password, output) is None
    assert _leaked(llm_key, output) is None
