"""Rate limits and quotas through the real API (the app with its lifespan, the real model, SQLite): 429 with
``Retry-After`` and the usual error body per key, per IP and per tenant quota (requests, LLM tokens from a real
OpenAI-compatible upstream, ingested bytes from documents and sync), never on health, readiness or metrics,
and requests let through when Redis is down."""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ragserve.api.app import create_app
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.security.auth import create_key
from ragserve.settings import Settings
from tests.integration.canned_llm import CannedLLM
from tests.integration.helpers import wait_for_job
from tests.integration.server import free_port

AUTH = {"enabled": True, "key_pepper": "pepper-for-tests"}
LEAVE = "Employees get 25 days of paid leave per year. Unused leave days expire at the end of March."
QUESTION = {"question": "How many days of paid leave do employees get per year?"}
CANNED_ANSWER = "Employees get 25 days of paid leave per year [1]."


def _key(client: TestClient, tenant: str, scopes: tuple[str, ...] = ("query", "ingest")) -> dict[str, str]:
    service = client.app.state.service  # type: ignore[attr-defined]
    pepper = client.app.state.authenticator.pepper  # type: ignore[attr-defined]
    secret, _ = create_key(service.stores.keys, pepper, "app", tenant, list(scopes), None)
    return {"authorization": f"Bearer {secret}"}


def _metric(client: TestClient, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def _assert_429(response: Any, code: str, max_retry_after: int) -> dict[str, str]:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= max_retry_after
    error: dict[str, str] = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    return error


@pytest.fixture
def limited(make_settings: Callable[..., Settings], embedder: OnnxEmbedder) -> Callable[..., TestClient]:
    clients: list[TestClient] = []

    def make(**rate_limit: object) -> TestClient:
        # Rates so low that nothing refills while a test runs.
        settings = make_settings(auth=AUTH, rate_limit={"enabled": True, **rate_limit})
        client = TestClient(create_app(settings, embedder))
        client.__enter__()
        clients.append(client)
        return client

    yield make  # type: ignore[misc]
    for client in clients:
        client.__exit__(None, None, None)


def test_a_key_over_its_rate_gets_429_with_retry_after_while_other_keys_and_probes_go_on(
    limited: Callable[..., TestClient],
) -> None:
    client = limited(per_key_rate=0.01, per_key_burst=3, per_ip_rate=0)
    first, second = _key(client, "acme"), _key(client, "acme")
    before = _metric(client, "ragserve_rate_limited_total", kind="key")
    assert [client.get("/v1/collections", headers=first).status_code for _ in range(3)] == [200, 200, 200]
    refused = client.post("/v1/search", json={"query": "leave"}, headers=first)
    error = _assert_429(refused, "rate_limited", max_retry_after=100)
    assert "0.01 requests/s" in error["message"]
    assert client.get("/v1/collections", headers=second).status_code == 200
    for path in ("/health", "/ready", "/metrics"):
        assert all(client.get(path).status_code == 200 for _ in range(5))
    assert _metric(client, "ragserve_rate_limited_total", kind="key") == before + 1


def test_a_client_ip_over_its_rate_gets_429_even_before_authenticating(limited: Callable[..., TestClient]) -> None:
    client = limited(per_key_rate=0, per_ip_rate=0.01, per_ip_burst=2)
    assert [client.get("/v1/collections").status_code for _ in range(2)] == [401, 401]
    error = _assert_429(client.get("/v1/collections"), "rate_limited", max_retry_after=100)
    assert "client testclient" in error["message"]


def test_the_request_quota_refuses_a_tenant_until_the_next_utc_day(limited: Callable[..., TestClient]) -> None:
    client = limited(requests_per_day=3)
    acme, beta = _key(client, "acme"), _key(client, "beta")
    assert [client.get("/v1/collections", headers=acme).status_code for _ in range(3)] == [200, 200, 200]
    error = _assert_429(client.get("/v1/collections", headers=acme), "quota_exceeded", max_retry_after=86400)
    assert "quota requests" in error["message"]
    assert "'acme'" in error["message"]
    assert client.get("/v1/collections", headers=beta).status_code == 200


def _submit(client: TestClient, headers: dict[str, str], text: str, external_id: str) -> Any:
    documents = [{"external_id": external_id, "text": text}]
    return client.post("/v1/documents", json={"collection": "hr", "documents": documents}, headers=headers)


def _sync(client: TestClient, headers: dict[str, str], files: dict[str, bytes], dry_run: bool = False) -> Any:
    listing = [{"path": p, "content_base64": base64.b64encode(data).decode()} for p, data in files.items()]
    body = {"source": "share", "files": listing, "dry_run": dry_run}
    return client.post("/v1/collections/hr/sync", json=body, headers=headers)


def test_ingested_bytes_are_counted_before_staging_and_refused_over_the_quota(
    limited: Callable[..., TestClient],
) -> None:
    client = limited(ingest_bytes_per_day=400)
    acme = _key(client, "acme")
    client.headers.update(acme)  # wait_for_job too
    accepted = _submit(client, acme, "a" * 150, "one")
    assert accepted.status_code == 202
    error = _assert_429(_submit(client, acme, "b" * 300, "two"), "quota_exceeded", max_retry_after=86400)
    assert "quota ingest_bytes" in error["message"]
    wait_for_job(client, accepted.json()["job_id"])
    assert client.get("/v1/documents?collection=hr", headers=acme).json()["total"] == 1  # "two" was not staged

    # Sync: only new and changed files count; a dry run and an unchanged file cost nothing.
    files = {"notes/a.md": b"# Notes\n\n" + b"x" * 141}
    assert _sync(client, acme, files, dry_run=True).status_code == 202
    synced = _sync(client, acme, files)
    assert synced.status_code == 202
    assert synced.json()["added"] == ["notes/a.md"]
    for job_id in synced.json()["job_ids"]:
        wait_for_job(client, job_id)
    assert _sync(client, acme, files).json()["unchanged"] == 1  # 300 used: free, though 150 more would not fit
    _assert_429(_sync(client, acme, {**files, "notes/b.md": b"y" * 150}), "quota_exceeded", max_retry_after=86400)
    assert _submit(client, acme, "c" * 100, "three").status_code == 202  # exactly at the quota


def test_the_stored_chunks_quota_refuses_ingestion_until_documents_are_deleted(
    limited: Callable[..., TestClient],
) -> None:
    client = limited(stored_chunks=3)
    acme, globex = _key(client, "acme"), _key(client, "globex")
    client.headers.update(acme)  # wait_for_job
    first = client.post(
        "/v1/documents", json={"collection": "hr", "documents": [{"text": "one"}, {"text": "two"}]}, headers=acme
    )
    assert first.status_code == 202
    wait_for_job(client, first.json()["job_id"])  # 2 chunks stored
    refused = client.post(
        "/v1/documents", json={"collection": "hr", "documents": [{"text": "3"}, {"text": "4"}]}, headers=acme
    )
    assert refused.status_code == 429, refused.text
    assert "retry-after" not in refused.headers  # only deleting documents makes room
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert "stored_chunks" in refused.json()["error"]["message"]
    assert _submit(client, globex, "other tenant", "g").status_code == 202  # quotas are per tenant
    assert _search_ok(client, acme)
    client.delete(f"/v1/documents/{first.json()['document_ids'][0]}", headers=acme)
    again = client.post(
        "/v1/documents", json={"collection": "hr", "documents": [{"text": "3"}, {"text": "4"}]}, headers=acme
    )
    assert again.status_code == 202, again.text


def _search_ok(client: TestClient, headers: dict[str, str]) -> bool:
    return client.post("/v1/search", json={"query": "one", "collection": "hr"}, headers=headers).status_code == 200


@pytest.fixture
def canned() -> Iterator[CannedLLM]:
    with CannedLLM(CANNED_ANSWER) as llm:
        yield llm


def test_llm_tokens_are_charged_to_the_tenant_and_refuse_its_answers_once_over(
    make_settings: Callable[..., Settings], embedder: OnnxEmbedder, canned: CannedLLM
) -> None:
    provider = {"name": "canned", "kind": "openai_compat", "base_url": canned.base_url, "model": "m"}
    settings = make_settings(
        auth=AUTH,
        rate_limit={"enabled": True, "llm_tokens_per_day": 100},
        llm={"providers": [provider], "retry": {"max_attempts": 1}},
        cache={"answers": False},
        observability={"judge_sample_rate": 0.0},
    )
    with TestClient(create_app(settings, embedder)) as client:
        acme, beta = _key(client, "acme"), _key(client, "beta")
        client.headers.update(acme)  # wait_for_job too
        job = _submit(client, acme, LEAVE, "leave").json()
        assert wait_for_job(client, job["job_id"])["status"] == "succeeded"
        question = {**QUESTION, "collection": "hr"}
        # Each answer costs 50 prompt tokens and a token per word upstream: the first two fit under 100, then
        # the tenant is over. A streamed answer is charged when its stream ends.
        per_answer = 50 + len(CANNED_ANSWER.split())
        streamed = client.post("/v1/answer", json={**question, "stream": True}, headers=acme)
        assert "event: done" in streamed.text
        assert client.post("/v1/answer", json=question, headers=acme).json()["generator"] == "canned"
        error = _assert_429(client.post("/v1/answer", json=question, headers=acme), "quota_exceeded", 86400)
        assert "quota llm_tokens" in error["message"]
        assert f"{2 * per_answer} used" in error["message"]
        chat = {"model": "ragserve/hr", "messages": [{"role": "user", "content": QUESTION["question"]}]}
        _assert_429(client.post("/v1/chat/completions", json=chat, headers=acme), "quota_exceeded", 86400)
        assert client.post("/v1/search", json={"query": "leave", "collection": "hr"}, headers=acme).status_code == 200
        # Another tenant is not over: its own (default) collection, since tenants never share one.
        beta_chat = {**chat, "model": "ragserve"}
        assert client.post("/v1/chat/completions", json=beta_chat, headers=beta).status_code == 200


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private ``redis-server`` this test may kill."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        client.close()
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=10)


def test_requests_go_through_when_redis_goes_down(
    make_settings: Callable[..., Settings],
    embedder: OnnxEmbedder,
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, redis_server = own_redis
    settings = make_settings(
        auth=AUTH,
        redis={"url": url},
        cache={"answers": False},
        rate_limit={"enabled": True, "per_key_rate": 0.01, "per_key_burst": 1, "requests_per_day": 2},
    )
    with TestClient(create_app(settings, embedder)) as client:
        acme = _key(client, "acme")
        assert client.get("/v1/collections", headers=acme).status_code == 200
        _assert_429(client.get("/v1/collections", headers=acme), "rate_limited", max_retry_after=100)
        redis_server.kill()
        redis_server.wait(timeout=10)
        before = _metric(client, "ragserve_rate_limit_fail_open_total", check="key")
        assert [client.get("/v1/collections", headers=acme).status_code for _ in range(4)] == [200] * 4
        assert _metric(client, "ragserve_rate_limit_fail_open_total", check="key") == before + 4
        assert client.get("/health").status_code == 200
