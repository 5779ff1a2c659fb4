"""Document, job and ingestion behaviour through the HTTP API, with the real model and embedded stores."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import FIXTURES
from tests.integration.helpers import ingest, wait_for_job

CATS = "Cats are small domesticated carnivorous mammals. They sleep for up to sixteen hours a day."
ROCKETS = "Liquid-fuel rockets burn kerosene or hydrogen with liquid oxygen to produce thrust."


def test_json_ingest_then_list_get_and_chunks(client: TestClient) -> None:
    job = ingest(client, [{"external_id": "cats", "title": "Cats", "text": CATS, "metadata": {"topic": "pets"}}])
    assert job["status"] == "succeeded"
    assert job["progress"] == {"stage": "done", "done": 1, "total": 1}
    (doc_id,) = job["document_ids"]

    listing = client.get("/v1/documents", params={"collection": "default"}).json()
    assert listing["total"] == 1
    assert listing["documents"][0]["id"] == doc_id

    doc = client.get(f"/v1/documents/{doc_id}", params={"include_chunks": True}).json()
    assert doc["status"] == "ready"
    assert doc["title"] == "Cats"
    assert doc["metadata"] == {"topic": "pets"}
    assert doc["chunk_count"] == len(doc["chunks"]) >= 1
    assert "sixteen hours" in " ".join(c["text"] for c in doc["chunks"])


def test_multipart_upload_of_several_file_types(client: TestClient) -> None:
    files_dir = FIXTURES / "files"
    names = sorted(p.name for p in files_dir.iterdir() if p.suffix in {".pdf", ".docx", ".html", ".md"})
    assert {Path(n).suffix for n in names} >= {".pdf", ".docx", ".html", ".md"}
    broken = ("garbage", "notadocx", "bad", "invalid", "binary", "encrypted", "scanned", "empty")
    good = [n for n in names if not n.startswith(broken)]
    files = [("files", (n, (files_dir / n).read_bytes())) for n in good]
    response = client.post("/v1/documents", files=files, data={"collection": "uploads"})
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job["errors"]
    docs = client.get("/v1/documents", params={"collection": "uploads"}).json()
    assert docs["total"] == len(good)
    assert all(d["chunk_count"] > 0 for d in docs["documents"])


def test_failed_file_leaves_nothing_and_others_succeed(client: TestClient) -> None:
    garbage = base64.b64encode(b"%PDF-1.4 this is not really a pdf").decode()
    job = ingest(
        client,
        [
            {"filename": "broken.pdf", "content_base64": garbage},
            {"external_id": "ok", "text": CATS},
        ],
    )
    assert job["status"] == "partial"
    assert len(job["errors"]) == 1
    assert job["errors"][0]["filename"] == "broken.pdf"
    broken_id, ok_id = job["document_ids"]
    assert client.get(f"/v1/documents/{broken_id}").status_code == 404
    assert client.get(f"/v1/documents/{ok_id}").json()["status"] == "ready"
    assert client.get("/v1/documents").json()["total"] == 1


def test_all_failed_job_is_failed(client: TestClient) -> None:
    garbage = base64.b64encode(b"\x00\x01\x02binary").decode()
    job = ingest(client, [{"filename": "x.txt", "content_base64": garbage}])
    assert job["status"] == "failed"
    assert job["errors"][0]["code"] == "binary_content"


def test_delete_removes_document_from_search(client: TestClient) -> None:
    job = ingest(client, [{"text": CATS}, {"text": ROCKETS}])
    cat_id = job["document_ids"][0]
    assert client.delete(f"/v1/documents/{cat_id}").status_code == 204
    assert client.get(f"/v1/documents/{cat_id}").status_code == 404
    for mode in ("keyword", "dense", "hybrid"):
        results = client.post("/v1/search", json={"query": "cats sleeping", "mode": mode}).json()["results"]
        assert cat_id not in {r["document_id"] for r in results}, mode
    assert client.delete(f"/v1/documents/{cat_id}").status_code == 404


def test_upsert_by_external_id_reembeds_only_changed_chunks(client: TestClient) -> None:
    paragraphs = [f"Paragraph {i} talks about topic number {i} in some detail. " * 12 for i in range(4)]
    body = {"title": "Handbook", "text": "\n\n".join(paragraphs)}
    first = client.put("/v1/documents/by-external-id/handbook", json=body)
    assert first.status_code == 202
    wait_for_job(client, first.json()["job_id"])
    doc_id = first.json()["document_ids"][0]
    before = client.get(f"/v1/documents/{doc_id}", params={"include_chunks": True}).json()["chunks"]
    assert len(before) >= 3

    paragraphs[-1] = "The last paragraph was rewritten entirely: it now describes penguins in Antarctica."
    second = client.put("/v1/documents/by-external-id/handbook", json={**body, "text": "\n\n".join(paragraphs)})
    assert second.json()["document_ids"] == [doc_id]
    wait_for_job(client, second.json()["job_id"])
    after = client.get(f"/v1/documents/{doc_id}", params={"include_chunks": True}).json()["chunks"]
    kept = {c["chunk_id"] for c in before} & {c["chunk_id"] for c in after}
    assert kept, "unchanged chunks keep their rows (and vectors)"
    assert len(kept) < len(after), "the changed chunk is new"
    assert "penguins" in " ".join(c["text"] for c in after)
    assert client.get("/v1/documents").json()["total"] == 1

    metrics = client.get("/metrics").text
    assert 'ragserve_embedding_cache_lookups_total{result="hit"}' in metrics


def test_idempotency_key_returns_the_same_job(client: TestClient) -> None:
    body = {"documents": [{"text": CATS}]}
    headers = {"Idempotency-Key": "req-123"}
    first = client.post("/v1/documents", json=body, headers=headers)
    second = client.post("/v1/documents", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    wait_for_job(client, first.json()["job_id"])
    assert client.get("/v1/documents").json()["total"] == 1
    conflict = client.post("/v1/documents", json={"documents": [{"text": ROCKETS}]}, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "conflict"


def test_unknown_job_and_document_are_404(client: TestClient) -> None:
    for path in ("/v1/jobs/nope", "/v1/documents/nope"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_a_batch_that_fails_whole_is_retried_not_lost(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    store = client.app.state.service.store  # type: ignore[attr-defined]
    original = store.write_document
    failures = {"left": 1}

    def flaky(*args: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return original(*args)

    monkeypatch.setattr(store, "write_document", flaky)
    job = ingest(client, [{"external_id": "cats", "text": CATS}])
    assert job["status"] == "succeeded"
    assert failures["left"] == 0
    assert client.get("/v1/documents").json()["total"] == 1


def test_upsert_accepts_external_ids_with_slashes(client: TestClient) -> None:
    # The CLI uses file paths as external ids.
    response = client.put("/v1/documents/by-external-id/docs/guides/setup.md", json={"text": CATS})
    assert response.status_code == 202, response.text
    wait_for_job(client, response.json()["job_id"])
    (doc,) = client.get("/v1/documents").json()["documents"]
    assert doc["external_id"] == "docs/guides/setup.md"
