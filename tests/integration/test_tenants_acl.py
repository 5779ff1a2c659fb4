"""Tenants and per-document permissions through the API, with authentication on: nothing crosses tenants, and
a document's ACL decides who finds it in search, answers, citations, the answer cache and the document routes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ragserve.api.app import create_app
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.security.auth import create_key
from ragserve.settings import Settings
from tests.integration.helpers import ingest

LEAVE = "Employees get 25 days of paid leave per year. Unused days expire in March."
SALARY = "Salary band 7 pays 95,000 euros per year. Salary bands are confidential."
GLOBEX = "Globex staff get 10 days of paid leave per year."


@pytest.fixture
def client(make_settings: Callable[..., Settings], embedder: OnnxEmbedder) -> Iterator[TestClient]:
    auth = {"enabled": True, "key_pepper": "pepper-for-tests"}
    with TestClient(create_app(make_settings(auth=auth), embedder)) as test_client:
        yield test_client


def _key(
    client: TestClient, tenant: str, scopes: list[str], user: str | None = None, groups: tuple[str, ...] = ()
) -> dict[str, str]:
    app: Any = client.app
    secret, _ = create_key(
        app.state.service.stores.keys, app.state.authenticator.pepper, "t", tenant, scopes, None, user, groups
    )
    return {"authorization": f"Bearer {secret}"}


def _search(client: TestClient, who: dict[str, str], query: str) -> set[str]:
    response = client.post("/v1/search", json={"query": query, "collection": "handbook", "k": 10}, headers=who)
    assert response.status_code == 200, response.text
    return {hit["document_id"] for hit in response.json()["results"]}


def _cited(client: TestClient, who: dict[str, str], question: str) -> set[str]:
    response = client.post("/v1/answer", json={"question": question, "collection": "handbook"}, headers=who)
    assert response.status_code == 200, response.text
    return {c["document_id"] for c in response.json()["citations"]}


def test_tenants_and_acls_end_to_end(client: TestClient) -> None:
    writer = _key(client, "acme", ["query", "ingest", "admin"])
    hr = _key(client, "acme", ["query", "ingest"], user="hannah", groups=("hr",))
    eng = _key(client, "acme", ["query", "ingest"], user="eddie", groups=("eng",))
    globex = _key(client, "globex", ["query", "ingest"])

    job = ingest(
        client,
        [{"text": LEAVE, "title": "Leave"}, {"text": SALARY, "title": "Salaries", "acl": {"groups": ["hr"]}}],
        "handbook",
        writer,
    )
    leave_id, salary_id = job["document_ids"]
    (globex_id,) = ingest(client, [{"text": GLOBEX}], "handbook", globex)["document_ids"]

    # Search and answers: the ACL is a pre-filter, and tenants never mix.
    assert _search(client, hr, "salary band pay") >= {salary_id}
    assert salary_id not in _search(client, eng, "salary band pay")
    assert _search(client, globex, "paid leave days") == {globex_id}
    assert leave_id in _search(client, eng, "paid leave days")
    # hr's answer is cached first; eng asks the same question and must not get it.
    assert salary_id in _cited(client, hr, "What does salary band 7 pay?")
    assert salary_id not in _cited(client, eng, "What does salary band 7 pay?")
    assert _cited(client, globex, "What does salary band 7 pay?") <= {globex_id}

    # Document routes answer 404 for what the caller may not read, and list only what it may.
    assert client.get(f"/v1/documents/{salary_id}", headers=eng).status_code == 404
    assert client.get(f"/v1/documents/{salary_id}", headers=hr).json()["acl"]["groups"] == ["hr"]
    assert client.get(f"/v1/documents/{leave_id}", headers=globex).status_code == 404
    listed = client.get("/v1/documents", params={"collection": "handbook"}, headers=eng).json()
    assert {d["id"] for d in listed["documents"]} == {leave_id}
    assert client.get(f"/v1/jobs/{job['id']}", headers=globex).status_code == 404
    assert client.delete(f"/v1/documents/{leave_id}", headers=globex).status_code == 404
    collections = client.get("/v1/collections", headers=globex).json()["collections"]
    assert collections == [{"name": "handbook", "document_count": 1}]

    # An ACL change counts at once, without re-embedding, and drops answers cached from the document.
    changed = client.patch(f"/v1/documents/{salary_id}/acl", json={"groups": ["eng"]}, headers=writer)
    assert changed.status_code == 200, changed.text
    assert changed.json()["acl"] == {"users": [], "groups": ["eng"], "public": False}
    assert salary_id in _search(client, eng, "salary band pay")
    assert salary_id not in _search(client, hr, "salary band pay")
    assert salary_id not in _cited(client, hr, "What does salary band 7 pay?")
    assert client.patch(f"/v1/documents/{salary_id}/acl", json={"groups": ["x"]}, headers=hr).status_code == 404
    bad = client.patch(f"/v1/documents/{salary_id}/acl", json={"users": [""]}, headers=writer)
    assert bad.status_code == 400
    assert bad.json()["error"]["code"]
    opened = client.patch(f"/v1/documents/{salary_id}/acl", json={"public": True}, headers=writer)
    assert opened.json()["acl"]["public"] is True
    assert salary_id in _search(client, hr, "salary band pay")


def test_multipart_upload_takes_an_acl(client: TestClient) -> None:
    writer = _key(client, "acme", ["query", "ingest", "admin"])
    reader = _key(client, "acme", ["query"], user="rita")
    files = [("files", ("memo.txt", b"The merger closes in June. Keep this memo private.", "text/plain"))]
    form = {"collection": "handbook", "acl": '{"users": ["sam"]}'}
    accepted = client.post("/v1/documents", data=form, files=files, headers=writer)
    assert accepted.status_code == 202, accepted.text
    (doc_id,) = accepted.json()["document_ids"]
    from tests.integration.helpers import wait_for_job

    assert wait_for_job(client, accepted.json()["job_id"], headers=writer)["status"] == "succeeded"
    assert doc_id in _search(client, writer, "merger memo")
    assert doc_id not in _search(client, reader, "merger memo")
    bad = client.post("/v1/documents", data={"acl": "{not json"}, files=files, headers=writer)
    assert bad.status_code == 400


def test_only_a_caller_who_may_read_a_document_may_replace_it(client: TestClient) -> None:
    """An upsert replaces content and ACL: by external id, a writer outside the ACL could otherwise open up or
    overwrite a document it may not read."""
    writer = _key(client, "acme", ["query", "ingest", "admin"])
    hr = _key(client, "acme", ["query", "ingest"], user="hannah", groups=("hr",))
    eng = _key(client, "acme", ["query", "ingest"], user="eddie", groups=("eng",))
    body = {"collection": "handbook", "text": SALARY, "acl": {"groups": ["hr"]}}
    accepted = client.put("/v1/documents/by-external-id/salaries", json=body, headers=writer)
    assert accepted.status_code == 202, accepted.text
    (salary_id,) = accepted.json()["document_ids"]
    from tests.integration.helpers import wait_for_job

    assert wait_for_job(client, accepted.json()["job_id"], headers=writer)["status"] == "succeeded"

    hostile = {"collection": "handbook", "text": "Everyone earns the same.", "acl": {"public": True}}
    refused = client.put("/v1/documents/by-external-id/salaries", json=hostile, headers=eng)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "forbidden"
    assert "salaries" in refused.json()["error"]["message"]
    item = {"text": hostile["text"], "acl": hostile["acl"], "external_id": "salaries"}
    as_batch = {"collection": "handbook", "documents": [item]}
    assert client.post("/v1/documents", json=as_batch, headers=eng).status_code == 403
    # Nothing changed: hr still reads the old text, eng still finds nothing.
    document = client.get(f"/v1/documents/{salary_id}", params={"include_chunks": True}, headers=hr).json()
    assert document["acl"]["groups"] == ["hr"]
    assert "95,000" in document["chunks"][0]["text"]
    assert salary_id not in _search(client, eng, "salary band pay")

    # A caller the ACL admits may replace it; an external id in another tenant's collection is its own.
    allowed = client.put("/v1/documents/by-external-id/salaries", json={**body, "text": LEAVE}, headers=hr)
    assert allowed.status_code == 202, allowed.text
    assert allowed.json()["document_ids"] == [salary_id]
    other = _key(client, "globex", ["query", "ingest"])
    assert client.put("/v1/documents/by-external-id/salaries", json=hostile, headers=other).status_code == 202
