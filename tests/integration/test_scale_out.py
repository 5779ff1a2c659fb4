"""The scale-out topology for real: two API processes and two worker processes on one PostgreSQL, Redis and
RabbitMQ. A document ingested through API A is found through API B; an answer cached on B is not served
after the document changes through A; a worker killed with SIGKILL mid-job loses and duplicates nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pika
import psycopg
import pytest

from tests.integration.server import free_port, start_server

pytestmark = pytest.mark.slow
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
LEAVE = "Employees get 25 days of paid leave per year. Leave requests go to the line manager."
LEAVE_CHANGED = "Employees get 30 days of paid leave per year. Leave requests go to the line manager."
QUESTION = {"question": "How many days of paid leave do employees get?", "collection": "hr"}


class Topology:
    def __init__(self, apis: list[str], workers: list[subprocess.Popen[bytes]], env: dict[str, str]) -> None:
        self.apis, self.workers, self.env = apis, workers, env


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ragserve.cli", "worker"], env={**os.environ, **env}, stdout=out, stderr=out
        )


@pytest.fixture
def topology(postgres_url: str, tmp_path: Path, model_cache: Path) -> Iterator[Topology]:
    queue = f"ragserve.test.{uuid.uuid4().hex[:10]}"
    env = {
        "RAGSERVE_STORE__BACKEND": "postgres",
        "RAGSERVE_STORE__POSTGRES_URL": postgres_url,
        "RAGSERVE_QUEUE__BACKEND": "rabbitmq",
        "RAGSERVE_QUEUE__RABBITMQ_URL": RABBITMQ_URL,
        "RAGSERVE_QUEUE__INGEST_QUEUE": queue,
        "RAGSERVE_QUEUE__LEASE_SECONDS": "3",
        "RAGSERVE_QUEUE__HEARTBEAT_SECONDS": "1",
        "RAGSERVE_QUEUE__RELAY_INTERVAL_SECONDS": "0.2",
        "RAGSERVE_QUEUE__ITEMS_PER_MESSAGE": "4",
        "RAGSERVE_REDIS__URL": "redis://127.0.0.1:6379/0",
        "RAGSERVE_REDIS__KEY_PREFIX": f"test-{uuid.uuid4().hex[:10]}",
        "RAGSERVE_CACHE__EMBEDDINGS": "redis",
        "RAGSERVE_EMBEDDING__CACHE_DIR": str(model_cache),
        "RAGSERVE_EMBEDDING__THREADS": "1",
    }
    processes: list[subprocess.Popen[bytes]] = []
    workers: list[subprocess.Popen[bytes]] = []
    apis = []
    try:
        for name in ("a", "b"):
            port = free_port()
            data = tmp_path / f"data-{name}"
            processes.append(start_server(data, port, model_cache, tmp_path / f"api-{name}.log", env))
            apis.append(f"http://127.0.0.1:{port}")
        for i in range(2):
            workers.append(_worker({**env, "RAGSERVE_DATA_DIR": str(tmp_path / f"w{i}")}, tmp_path / f"w{i}.log"))
        yield Topology(apis, workers, env)
    finally:
        for process in [*processes, *workers]:
            if process.poll() is None:
                process.terminate()
        for process in [*processes, *workers]:
            process.wait(timeout=30)
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        channel = connection.channel()
        for suffix in ("", ".DQ", ".XQ"):
            channel.queue_delete(queue=f"{queue}{suffix}")
        connection.close()


def _ingest(api: str, documents: list[dict[str, Any]], timeout: float = 120) -> dict[str, Any]:
    response = httpx.post(f"{api}/v1/documents", json={"collection": "hr", "documents": documents}, timeout=30)
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(f"{api}/v1/jobs/{response.json()['job_id']}", timeout=10).json()
        if job["status"] in ("succeeded", "failed", "partial"):
            return job
        time.sleep(0.2)
    raise AssertionError("the job did not finish")


def test_two_apis_two_workers_share_documents_answers_and_survive_a_killed_worker(
    topology: Topology, postgres_url: str
) -> None:
    api_a, api_b = topology.apis
    assert _ingest(api_a, [{"external_id": "leave", "title": "Leave policy", "text": LEAVE}])["status"] == "succeeded"
    found = httpx.post(f"{api_b}/v1/search", json={"query": "paid leave days", "collection": "hr"}).json()
    assert [hit["external_id"] for hit in found["results"]] == ["leave"]

    first = httpx.post(f"{api_b}/v1/answer", json=QUESTION, timeout=30).json()
    assert "25 days" in first["answer"]
    assert httpx.post(f"{api_b}/v1/answer", json=QUESTION, timeout=30).json() == first  # cached on B
    assert _ingest(api_a, [{"external_id": "leave", "title": "Leave policy", "text": LEAVE_CHANGED}])["status"] == (
        "succeeded"
    )
    changed = httpx.post(f"{api_b}/v1/answer", json=QUESTION, timeout=30).json()
    assert "30 days" in changed["answer"]

    # A worker dies with SIGKILL while it holds items of a larger job: the other one takes them over once the
    # lease runs out.
    documents = [
        {"external_id": f"note-{i}", "text": f"Note {i}: the office plant number {i} needs water on day {i}. " * 20}
        for i in range(100)
    ]
    response = httpx.post(f"{api_a}/v1/documents", json={"collection": "hr", "documents": documents}, timeout=30)
    job_id = response.json()["job_id"]
    victim = topology.workers[0]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            held = conn.execute(
                "SELECT count(*) FROM job_items WHERE status = 'running' AND lease_owner LIKE %s",
                (f"%:{victim.pid}:%",),
            ).fetchone()
            if held is not None and held[0] > 0:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the first worker never held an item")
    victim.kill()
    victim.wait()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = httpx.get(f"{api_b}/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] in ("succeeded", "failed", "partial"):
            break
        time.sleep(0.3)
    assert job["status"] == "succeeded", job
    with psycopg.connect(postgres_url) as conn:
        documents_count = conn.execute("SELECT count(*) FROM documents WHERE status = 'ready'").fetchone()
        duplicates = conn.execute(
            "SELECT count(*) FROM (SELECT document_id, collection_id, ordinal FROM chunks GROUP BY 1, 2, 3 "
            "HAVING count(*) > 1) d"
        ).fetchone()
        running = conn.execute("SELECT count(*) FROM job_items WHERE status = 'running'").fetchone()
    assert documents_count == (101,)
    assert duplicates == (0,)
    assert running == (0,)
