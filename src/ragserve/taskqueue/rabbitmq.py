"""Ingestion through RabbitMQ with Dramatiq.

Why Dramatiq: it acks a message only after its actor returns (late acks), retries with exponential backoff,
dead-letters exhausted messages to a ``.XQ`` queue, supports RabbitMQ priority queues and publisher confirms,
and its actors and broker can be built as objects (no module-level singletons); Celery offers the same with a
larger surface we would not use.

The API never publishes inside a request: ``create_job`` writes outbox rows in the job's own transaction and
the relay here publishes them (at once on ``notify()``, and every ``relay_interval_seconds``), so a committed
job is published at least once even if the process dies right after the commit. Duplicates are harmless:
``LeasedIngestion`` makes processing idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import anyio.to_thread
import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import AgeLimit, CurrentMessage, Retries, ShutdownNotifications, TimeLimit

from ragserve.ingest.worker import ItemsLeasedElsewhereError, LeasedIngestion
from ragserve.observability.metrics import JOBS_PENDING, QUEUE_DEPTH
from ragserve.settings import QueueSettings
from ragserve.stores.protocol import LeasedJobStore

logger = logging.getLogger(__name__)

ACTOR_NAME = "ragserve_ingest"
MAX_PRIORITY = 10
_DEPTH_INTERVAL_SECONDS = 5.0


def build_broker(settings: QueueSettings) -> RabbitmqBroker:
    assert settings.rabbitmq_url is not None  # checked by the settings
    middleware = [
        AgeLimit(),
        TimeLimit(time_limit=int(settings.message_time_limit_seconds * 1000)),
        ShutdownNotifications(),
        CurrentMessage(),
        Retries(
            min_backoff=int(settings.min_backoff_seconds * 1000),
            max_backoff=int(settings.max_backoff_seconds * 1000),
            # Waiting for another worker's lease is not a failure: it never uses up the retries.
            retry_when=lambda retries, exc: isinstance(exc, dramatiq.Retry) or retries < settings.max_retries,
        ),
    ]
    return RabbitmqBroker(
        url=settings.rabbitmq_url.get_secret_value(),
        confirm_delivery=True,
        max_priority=MAX_PRIORITY,
        middleware=middleware,
    )


class RabbitmqQueue:
    """Implements ``TaskQueue``: publishes the outbox; with ``ingestion`` and consumers > 0 it also runs a
    Dramatiq worker in this process (``ragserve worker`` does exactly that, without the API)."""

    def __init__(
        self,
        settings: QueueSettings,
        jobs: LeasedJobStore,
        ingestion: LeasedIngestion | None = None,
        consumers: int = 0,
    ) -> None:
        self._settings = settings
        self._jobs = jobs
        self._ingestion = ingestion
        self._consumers = consumers
        self.broker = build_broker(settings)
        self._actor: dramatiq.Actor[Any, None] = dramatiq.Actor(
            self._run_message,
            broker=self.broker,
            actor_name=ACTOR_NAME,
            queue_name=settings.ingest_queue,
            priority=0,
            options={"max_retries": settings.max_retries},
        )
        self._worker: dramatiq.Worker | None = None
        self._relay: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._depth_at = 0.0

    def _run_message(self, job_id: str, seqs: list[int]) -> None:
        if self._ingestion is None:
            raise RuntimeError("this process publishes ingestion work but does not run it")
        message = CurrentMessage.get_current_message()
        retries = 0 if message is None else int(message.options.get("retries", 0))
        try:
            self._ingestion.handle(job_id, seqs, final_attempt=retries >= self._settings.max_retries)
        except ItemsLeasedElsewhereError:
            # Come back when a dead holder's lease will have run out.
            raise dramatiq.Retry(delay=int(self._settings.lease_seconds * 500)) from None

    # --- TaskQueue ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._ingestion is not None and self._consumers > 0:
            self._worker = dramatiq.Worker(self.broker, worker_threads=self._consumers, worker_timeout=1000)
            await anyio.to_thread.run_sync(self._worker.start)
        self._relay = asyncio.create_task(self._relay_loop(), name="outbox-relay")

    def notify(self) -> None:
        self._wakeup.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._relay is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay
        if self._worker is not None:
            await anyio.to_thread.run_sync(self._worker.stop)
        await anyio.to_thread.run_sync(self.broker.close)

    async def wait_idle(self, timeout_seconds: float = 600.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        while await anyio.to_thread.run_sync(self._jobs.pending_count):
            if time.monotonic() > deadline:
                raise TimeoutError("ingestion did not finish in time")
            await asyncio.sleep(0.1)

    # --- the outbox relay ----------------------------------------------------------------------------------

    async def _relay_loop(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                await anyio.to_thread.run_sync(self.relay_once)
            except Exception:
                # The broker or the database is down: the rows stay in the outbox for the next round.
                logger.exception("outbox relay failed; retrying in %.1f s", self._settings.relay_interval_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._settings.relay_interval_seconds)

    def relay_once(self) -> int:
        """Publish what the outbox holds; returns how many messages were sent."""
        sent = 0
        messages = self._jobs.unpublished(500, self._settings.republish_after_seconds)
        for message in messages:
            self._actor.send_with_options(
                kwargs={"job_id": message.job_id, "seqs": list(message.seqs)}, broker_priority=message.priority
            )
            self._jobs.mark_published([message.id])
            sent += 1
        if time.monotonic() - self._depth_at > _DEPTH_INTERVAL_SECONDS:
            self._depth_at = time.monotonic()
            ready, delayed, dead = self.broker.get_queue_message_counts(self._settings.ingest_queue)
            for kind, count in (("ready", ready), ("delayed", delayed), ("dead", dead)):
                QUEUE_DEPTH.labels(queue=self._settings.ingest_queue, kind=kind).set(count)
            JOBS_PENDING.set(self._jobs.pending_count())
        return sent
