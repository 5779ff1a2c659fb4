"""Helpers for API tests: submit documents and wait for their job."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient


def wait_for_job(
    client: TestClient, job_id: str, timeout_seconds: float = 120.0, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed", "partial"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout_seconds} s")


def ingest(
    client: TestClient,
    documents: list[dict[str, Any]],
    collection: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"documents": documents}
    if collection:
        body["collection"] = collection
    response = client.post("/v1/documents", json=body, headers=headers)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"], headers=headers)
    job["document_ids"] = response.json()["document_ids"]
    return job
