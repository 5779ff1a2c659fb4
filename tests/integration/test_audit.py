"""The audit log through the API and the command line: admin actions and ingestion are recorded with who,
what, target, request id and client, refused credentials and scopes too; an admin reads its own tenant's
events (filtered by action and time); ``ragserve audit list`` reads every tenant's."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ragserve.api.app import create_app
from ragserve.cli import app as cli
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.security.audit import AuditFilters
from ragserve.security.auth import create_key
from ragserve.settings import Settings
from tests.integration.test_auth import wait_for_job_with

DOCS = [
    {"external_id": "leave", "title": "Leave", "text": "Employees get 25 days of paid leave per year."},
    {"external_id": "travel", "title": "Travel", "text": "Book trains for trips under 500 km."},
]


@pytest.fixture
def client(make_settings: Callable[..., Settings], embedder: OnnxEmbedder) -> Iterator[TestClient]:
    settings = make_settings(auth={"enabled": True, "key_pepper": "pepper-for-tests"})
    with TestClient(create_app(settings, embedder)) as test_client:
        yield test_client


def _bootstrap_key(client: TestClient, tenant: str, scopes: list[str]) -> tuple[dict[str, str], str]:
    """A key made straight in the store (as ``ragserve keys create`` would), so not recorded by the API."""
    service = client.app.state.service  # type: ignore[attr-defined]
    pepper = client.app.state.authenticator.pepper  # type: ignore[attr-defined]
    secret, key = create_key(service.stores.keys, pepper, "bootstrap", tenant, scopes, None)
    return {"authorization": f"Bearer {secret}"}, key.id


def _ok(response: Any, status: int) -> Any:
    assert response.status_code == status, response.text
    return response


def _events(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = _ok(client.get("/v1/audit", params=params, headers=headers), 200)
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def _wait_ready(client: TestClient, admin: dict[str, str], number: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        versions = client.get("/v1/collections/hr/index", headers=admin).json()["versions"]
        if next(v for v in versions if v["version"] == number)["state"] == "ready":
            return
        time.sleep(0.1)
    raise AssertionError(f"index version {number} was not built")


def _index_lifecycle(client: TestClient, admin: dict[str, str]) -> None:
    golden = {"queries": {"q1": "paid leave"}, "qrels": {"q1": {"leave": 1}}}
    _ok(client.put("/v1/collections/hr/golden", json=golden, headers=admin), 204)
    created = _ok(client.post("/v1/collections/hr/index/versions", json={"max_tokens": 64}, headers=admin), 202)
    assert created.json()["version"] == 2
    _wait_ready(client, admin, 2)
    _ok(client.put("/v1/collections/hr/index/canary", json={"version": 2, "share": 0.25}, headers=admin), 200)
    _ok(client.post("/v1/collections/hr/index/promote", json={"version": 2, "force": True}, headers=admin), 200)
    _ok(client.post("/v1/collections/hr/index/rollback", headers=admin), 200)
    _ok(client.delete("/v1/collections/hr/index/versions/2", headers=admin), 204)


def test_admin_actions_and_ingestion_are_recorded(client: TestClient) -> None:
    admin, admin_id = _bootstrap_key(client, "acme", ["admin"])
    created = _ok(client.post("/v1/keys", json={"name": "loader", "scopes": ["ingest", "query"]}, headers=admin), 201)
    loader_id, loader_secret = created.json()["info"]["id"], created.json()["key"]
    loader = {"authorization": f"Bearer {loader_secret}"}

    ingested = _ok(client.post("/v1/documents", json={"collection": "hr", "documents": DOCS}, headers=loader), 202)
    job_id, (leave_id, travel_id) = ingested.json()["job_id"], ingested.json()["document_ids"]
    assert wait_for_job_with(client, job_id, loader)["status"] == "succeeded"
    upsert = {"collection": "hr", "title": "Leave", "text": "Employees get 27 days of paid leave per year."}
    upserted = _ok(client.put("/v1/documents/by-external-id/leave", json=upsert, headers=loader), 202)
    assert wait_for_job_with(client, upserted.json()["job_id"], loader)["status"] == "succeeded"
    deleted = _ok(client.delete(f"/v1/documents/{travel_id}", headers=loader), 204)
    files = [{"path": "faq.md", "content_base64": base64.b64encode(b"# FAQ\n\nAsk HR.").decode()}]
    synced = _ok(client.post("/v1/collections/hr/sync", json={"source": "share", "files": files}, headers=loader), 202)
    _ok(
        client.post(
            "/v1/collections/hr/sync", json={"source": "share", "files": files, "dry_run": True}, headers=loader
        ),
        202,
    )
    _ok(client.put("/v1/collections/hr/settings", json={"fusion": "rrf", "rrf_k": 30}, headers=admin), 200)
    _index_lifecycle(client, admin)
    _ok(client.post("/v1/dead-letters/requeue", json={}, headers=admin), 200)
    _ok(client.delete(f"/v1/keys/{loader_id}", headers=admin), 200)

    # Refusals: a revoked key (its tenant is known from its id), a key of no one, a missing scope.
    _ok(client.post("/v1/search", json={"query": "leave"}, headers=loader), 401)
    _ok(
        client.post(
            "/v1/search", json={"query": "leave"}, headers={"authorization": "Bearer rsk_000000000000_" + "x" * 43}
        ),
        401,
    )
    searcher, searcher_id = _bootstrap_key(client, "acme", ["query"])
    _ok(client.put("/v1/collections/hr/settings", json={}, headers=searcher), 403)
    _ok(client.get("/v1/audit", headers=searcher), 403)

    events = _events(client, admin, limit=1000)
    actions = [e["action"] for e in reversed(events)]
    assert actions == [
        "key.create",
        "documents.ingest",
        "document.upsert",
        "document.delete",
        "sync",  # the dry run changed nothing and is not recorded
        "collection.settings.update",
        "index.golden.update",
        "index.create",
        "index.canary",
        "index.promote",
        "index.rollback",
        "index.delete",
        "dlq.requeue",
        "key.revoke",
        "auth.denied",
        "auth.denied",
        "auth.denied",
    ]
    by_action = {e["action"]: e for e in events if e["action"] != "auth.denied"}
    key_create = by_action["key.create"]
    assert (key_create["subject"], key_create["key_id"], key_create["tenant"], key_create["target"]) == (
        f"key:{admin_id}",
        admin_id,
        "acme",
        f"key:{loader_id}",
    )
    assert key_create["details"] == {"name": "loader", "scopes": "query,ingest"}
    assert key_create["client_ip"] == "testclient"
    assert key_create["outcome"] == "success"
    ingest = by_action["documents.ingest"]
    assert (ingest["subject"], ingest["target"]) == (f"key:{loader_id}", "collection:hr")
    assert ingest["details"] == {"job_id": job_id, "document_count": 2}
    assert ingest["request_id"] == ingested.headers["x-request-id"]
    assert by_action["document.upsert"]["target"] == f"document:{leave_id}"
    assert by_action["document.upsert"]["details"]["job_id"] == upserted.json()["job_id"]
    assert by_action["document.delete"]["target"] == f"document:{travel_id}"
    assert by_action["document.delete"]["request_id"] == deleted.headers["x-request-id"]
    assert by_action["sync"]["details"]["job_ids"] == ",".join(synced.json()["job_ids"])
    assert by_action["sync"]["details"]["added"] == 1
    assert by_action["collection.settings.update"]["details"] == {"fusion": "rrf", "rrf_k": 30}
    assert by_action["index.promote"]["details"] == {"version": 2, "forced": True, "gate_passed": True}
    assert by_action["index.rollback"]["details"] == {"version": 1}
    assert by_action["dlq.requeue"]["details"] == {"requeued": 0}

    # Newest first: the searcher's two refusals, then the revoked key's; the unknown key's belongs to no tenant.
    assert [e["target"] for e in events[:3]] == ["GET /v1/audit", "PUT /v1/collections/hr/settings", "POST /v1/search"]
    forbidden, revoked = events[1], events[2]
    assert (revoked["outcome"], revoked["subject"], revoked["key_id"], revoked["target"]) == (
        "denied",
        "unauthenticated",
        loader_id,
        "POST /v1/search",
    )
    assert revoked["details"] == {"code": "unauthorized"}
    assert (forbidden["subject"], forbidden["target"], forbidden["details"]) == (
        f"key:{searcher_id}",
        "PUT /v1/collections/hr/settings",
        {"code": "forbidden", "scope": "admin"},
    )
    assert loader_secret not in json.dumps(events)
    audit_log = client.app.state.service.stores.audit  # type: ignore[attr-defined]
    [unknown] = audit_log.list_events("", AuditFilters("auth.denied"), 10)
    assert (unknown.key_id, unknown.subject, unknown.client_ip) == ("000000000000", "unauthenticated", "testclient")

    # Filters and limits; the actions of another tenant's admin are its own.
    assert [e["action"] for e in _events(client, admin, action="index.*")] == [
        "index.delete",
        "index.rollback",
        "index.promote",
        "index.canary",
        "index.create",
        "index.golden.update",
    ]
    assert [e["action"] for e in _events(client, admin, action="key.revoke")] == ["key.revoke"]
    since = by_action["dlq.requeue"]["occurred_at"]
    assert [e["action"] for e in _events(client, admin, since=since)][-2:] == ["key.revoke", "dlq.requeue"]
    assert len(_events(client, admin, limit=2)) == 2
    _ok(client.get("/v1/audit", params={"limit": 0}, headers=admin), 422)
    other, _ = _bootstrap_key(client, "globex", ["admin"])
    assert _events(client, other) == []


@pytest.fixture
def env(tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAGSERVE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAGSERVE_EMBEDDING__CACHE_DIR", str(model_cache))
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


def test_the_command_line_records_its_key_actions_and_lists_every_tenant(env: Path) -> None:
    runner = CliRunner()
    before = datetime.now(UTC).isoformat()
    created = runner.invoke(cli, ["keys", "create", "--tenant", "acme", "--scopes", "admin"])
    assert created.exit_code == 0, created.output
    secret = created.output.splitlines()[0]
    key_id = secret.split("_")[1]
    assert runner.invoke(cli, ["keys", "create", "--tenant", "globex"]).exit_code == 0
    assert runner.invoke(cli, ["keys", "revoke", key_id]).exit_code == 0

    listed = runner.invoke(cli, ["audit", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    events = [json.loads(line) for line in listed.output.splitlines()]
    assert [(e["action"], e["tenant"]) for e in events] == [
        ("key.revoke", "acme"),
        ("key.create", "globex"),
        ("key.create", "acme"),
    ]
    assert all(e["subject"].startswith("cli:") and e["occurred_at"] >= before for e in events)
    assert events[2]["target"] == f"key:{key_id}"
    assert secret not in listed.output

    only_acme = runner.invoke(cli, ["audit", "list", "--tenant", "acme", "--action", "key.create", "--json"])
    assert [json.loads(line)["target"] for line in only_acme.output.splitlines()] == [f"key:{key_id}"]
    table = runner.invoke(cli, ["audit", "list", "--limit", "1"])
    assert table.exit_code == 0, table.output
    assert "key.revoke" in table.output
    assert "key.create" not in table.output
    future = runner.invoke(cli, ["audit", "list", "--since", "2999-01-01T00:00:00", "--json"])
    assert future.exit_code == 0
    assert future.output.strip() == ""
