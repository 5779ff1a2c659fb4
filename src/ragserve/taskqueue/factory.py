"""The task queue the settings ask for."""

from __future__ import annotations

from ragserve.errors import InvalidRequestError
from ragserve.ingest.pipeline import IngestPipeline
from ragserve.ingest.runner import LocalJobRunner
from ragserve.ingest.worker import LeasedIngestion
from ragserve.settings import Settings
from ragserve.stores.protocol import LeasedJobStore
from ragserve.taskqueue.protocol import TaskQueue


def build_task_queue(
    settings: Settings, jobs: LeasedJobStore, pipeline: IngestPipeline, *, shared_store: bool, consumers: int | None
) -> TaskQueue:
    """``consumers``: Dramatiq worker threads in this process (None: ``queue.in_process_workers``).
    ``shared_store``: whether other processes can reach the store (a separate worker needs that)."""
    queue = settings.queue
    if queue.backend == "local":
        return LocalJobRunner(
            jobs,
            pipeline,
            settings.jobs.workers,
            settings.jobs.poll_interval_seconds,
            settings.jobs.retry_seconds,
            claim_documents=settings.jobs.claim_documents,
            claim_bytes=settings.jobs.claim_max_mb * 1024 * 1024,
        )
    from ragserve.taskqueue.rabbitmq import RabbitmqQueue  # pika is only imported where it is used

    threads = queue.in_process_workers if consumers is None else consumers
    if not shared_store and threads == 0:
        raise InvalidRequestError(
            "queue.backend rabbitmq with the embedded SQLite store needs RAGSERVE_QUEUE__IN_PROCESS_WORKERS >= 1: "
            "no other process can reach this store (use the postgres store for separate workers)"
        )
    ingestion = LeasedIngestion(jobs, pipeline, queue.lease_seconds, queue.heartbeat_seconds)
    return RabbitmqQueue(queue, jobs, ingestion, consumers=threads)
