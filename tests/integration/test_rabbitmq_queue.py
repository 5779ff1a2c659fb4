"""Ingestion through a real RabbitMQ (:5672, guest/guest): the outbox relay publishes committed jobs, a
Dramatiq worker consumes them, a redelivered message duplicates nothing, and a batch that keeps failing is
dead-lettered and can be requeued. Each test uses its own queue, deleted afterwards.

These run the consumers inside the API process on the SQLite store; separate worker processes on PostgreSQL
are exercised by ``bench/chaos_ingest.py``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from fastapi.testclient import TestClient

from ragserve.api.app import create_app
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.settings import Settings
from ragserve.taskqueue.rabbitmq import RabbitmqQueue
from tests.integration.helpers import ingest, wait_for_job

pytestmark = pytest.mark.slow
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
CATS = "Cats sleep for most of the day and purr when they are content."
DOGS = "Dogs wag their tails and bark at the postman every morning."


@pytest.fixture
def queue_name() -> Iterator[str]:
    name = f"ragserve.test.{uuid.uuid4().hex[:12]}"
    yield name
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    channel = connection.channel()
    for suffix in ("", ".DQ", ".XQ"):
        channel.queue_delete(queue=f"{name}{suffix}")
    connection.close()


@pytest.fixture
def rabbit_client(make_settings: Any, embedder: OnnxEmbedder, queue_name: str) -> Iterator[TestClient]:
    queue = {
        "backend": "rabbitmq",
        "rabbitmq_url": RABBITMQ_URL,
        "ingest_queue": queue_name,
        "in_process_workers": 1,
        "max_retries": 1,
        "min_backoff_seconds": 0.05,
        "max_backoff_seconds": 0.1,
        "relay_interval_seconds": 0.1,
        "lease_seconds": 2.0,
        "heartbeat_seconds": 0.5,
    }
    settings: Settings = make_settings(queue=queue)
    with TestClient(create_app(settings, embedder)) as client:
        yield client


def _chunk_count(client: TestClient) -> int:
    service = client.app.state.service  # type: ignore[attr-defined]
    return int(service.store._db.fetchone("SELECT count(*) FROM chunks")[0])


def test_jobs_flow_through_the_broker_and_redelivery_duplicates_nothing(rabbit_client: TestClient) -> None:
    job = ingest(rabbit_client, [{"external_id": "cats", "text": CATS}, {"external_id": "dogs", "text": DOGS}])
    assert job["status"] == "succeeded", job
    service = rabbit_client.app.state.service  # type: ignore[attr-defined]
    assert isinstance(service.queue, RabbitmqQueue)
    assert service.jobs.unpublished(10, republish_after_seconds=3600) == []
    chunks = _chunk_count(rabbit_client)
    assert chunks == 2

    # The broker delivers the same message again (a worker died before its ack): nothing changes.
    service.queue._actor.send(job_id=job["id"], seqs=[0, 1])
    time.sleep(1.0)
    assert _chunk_count(rabbit_client) == chunks
    found = rabbit_client.post("/v1/search", json={"query": "purring cats", "k": 5}).json()["results"]
    assert [hit["external_id"] for hit in found].count("cats") == 1


def test_a_failing_batch_is_dead_lettered_then_requeued(
    rabbit_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = rabbit_client.app.state.service  # type: ignore[attr-defined]
    original = service.pipeline.process
    calls = {"n": 0}

    def broken(items: Any) -> None:
        calls["n"] += 1
        raise RuntimeError("the model crashed")

    monkeypatch.setattr(service.pipeline, "process", broken)
    response = rabbit_client.post("/v1/documents", json={"documents": [{"external_id": "cats", "text": CATS}]})
    assert response.status_code == 202
    job = wait_for_job(rabbit_client, response.json()["job_id"], timeout_seconds=60)
    assert job["status"] == "failed"
    assert [e["code"] for e in job["errors"]] == ["retries_exhausted"]
    assert calls["n"] == 2  # the first try and max_retries = 1 retry
    dead = rabbit_client.get("/v1/dead-letters").json()["items"]
    assert [(d["job_id"], d["error"]["code"]) for d in dead] == [(job["id"], "retries_exhausted")]

    monkeypatch.setattr(service.pipeline, "process", original)
    requeued = rabbit_client.post("/v1/dead-letters/requeue", json={"job_id": job["id"]})
    assert requeued.json() == {"requeued": 1}
    again = wait_for_job(rabbit_client, job["id"], timeout_seconds=60)
    assert again["status"] == "succeeded", again
    assert rabbit_client.get("/v1/dead-letters").json()["items"] == []
    assert _chunk_count(rabbit_client) == 1
