"""The embedded, in-process job runner: a few asyncio tasks that claim staged documents from the job store
and run the pipeline on them in worker threads. Items a crashed process left running are requeued at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime

import anyio.to_thread

from ragserve.domain import JobStatus
from ragserve.ingest.pipeline import IngestPipeline
from ragserve.observability.metrics import INGEST_LAG, JOB_DURATION, JOBS_PENDING
from ragserve.observability.tracing import start_span
from ragserve.stores.protocol import JobStore, StagedItem

logger = logging.getLogger(__name__)

_FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.PARTIAL)


class LocalJobRunner:
    """Runs ingestion jobs in this process. ``notify()`` wakes idle workers when a job is created."""

    def __init__(
        self,
        jobs: JobStore,
        pipeline: IngestPipeline,
        workers: int,
        poll_interval_seconds: float,
        retry_seconds: float = 5.0,
        *,
        claim_documents: int = 128,
        claim_bytes: int | None = None,
    ) -> None:
        self._jobs = jobs
        self._pipeline = pipeline
        self._workers = workers
        self._poll = poll_interval_seconds
        self._retry_seconds = retry_seconds
        # The model embeds a claim's chunks in one length-sorted call: more documents, less padding.
        self._claim_documents = claim_documents
        self._claim_bytes = claim_bytes
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        # Jobs whose duration was observed lately: two workers may both see a job finish.
        self._finished: deque[str] = deque(maxlen=256)

    async def start(self) -> None:
        requeued = await anyio.to_thread.run_sync(self._jobs.requeue_running)
        if requeued:
            logger.info("resuming %d documents left running by a previous process", requeued)
        self._tasks = [asyncio.create_task(self._work(), name=f"ingest-worker-{i}") for i in range(self._workers)]

    def notify(self) -> None:
        self._wakeup.set()

    async def stop(self) -> None:
        """Stop after the batches in progress are written (a batch is never cut in half)."""
        self._stopping = True
        self._wakeup.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _work(self) -> None:
        while not self._stopping:
            try:
                items = await anyio.to_thread.run_sync(self._jobs.claim_items, self._claim_documents, self._claim_bytes)
                JOBS_PENDING.set(await anyio.to_thread.run_sync(self._jobs.pending_count))
            except Exception:
                # The database is unreachable (``/ready`` says so): keep the worker for when it is back.
                logger.exception("cannot claim ingestion work; retrying in %.1f s", self._retry_seconds)
                await self._idle(self._retry_seconds)
                continue
            if not items:
                await self._idle(self._poll)
                continue
            try:
                with start_span("ragserve.ingest", {"ragserve.documents": len(items)}):
                    await anyio.to_thread.run_sync(self._pipeline.process, items)
            except Exception:
                # The pipeline fails bad files one by one; reaching here means the store or the model failed
                # for the whole batch. Keep the worker alive, back off, and retry the batch.
                logger.exception("ingestion batch failed; retrying in %.1f s", self._retry_seconds)
                await asyncio.sleep(self._retry_seconds)
                await anyio.to_thread.run_sync(self._jobs.release_items, items)
                continue
            try:
                await self._observe(items)
            except Exception:
                # Metrics must never stop a worker; the batch itself is done.
                logger.exception("could not observe the metrics of an ingestion batch")

    async def _idle(self, seconds: float) -> None:
        """Wait ``seconds``, or less when ``notify()`` or ``stop()`` is called."""
        if self._stopping:
            return
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=seconds)

    async def _observe(self, items: Sequence[StagedItem]) -> None:
        """Observe the ingest lag of the batch's documents that were indexed (it has just ended) and the
        duration of the jobs it finished."""
        for job_id in {item.job_id for item in items}:
            job = await anyio.to_thread.run_sync(self._jobs.get_job, job_id)
            elapsed = (datetime.now(UTC) - job.created_at).total_seconds()
            failed = {error.document_id for error in job.errors}
            for item in items:
                if item.job_id == job_id and item.document_id not in failed:
                    INGEST_LAG.observe(elapsed)
            if job.status in _FINISHED and job_id not in self._finished:
                self._finished.append(job_id)
                JOB_DURATION.labels(status=job.status.value).observe(elapsed)

    async def wait_idle(self, timeout_seconds: float = 600.0) -> None:
        """Wait until no document is pending or running (used by the CLI and tests)."""
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        while await anyio.to_thread.run_sync(self._jobs.pending_count):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("ingestion did not finish in time")
            await asyncio.sleep(0.05)
