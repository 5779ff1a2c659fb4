"""The embedded, in-process job runner: a few asyncio tasks that claim staged documents from the job store
and run the pipeline on them in worker threads. Items a crashed process left running are requeued at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import anyio.to_thread

from ragserve.ingest.pipeline import IngestPipeline
from ragserve.observability.metrics import JOBS_PENDING
from ragserve.stores.sqlite_jobs import SqliteJobStore

logger = logging.getLogger(__name__)

# Documents claimed at once: enough to fill the model's batches with small documents.
_CLAIM_BATCH = 32


class LocalJobRunner:
    """Runs ingestion jobs in this process. ``notify()`` wakes idle workers when a job is created."""

    def __init__(
        self,
        jobs: SqliteJobStore,
        pipeline: IngestPipeline,
        workers: int,
        poll_interval_seconds: float,
        retry_seconds: float = 5.0,
    ) -> None:
        self._jobs = jobs
        self._pipeline = pipeline
        self._workers = workers
        self._poll = poll_interval_seconds
        self._retry_seconds = retry_seconds
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

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
            items = await anyio.to_thread.run_sync(self._jobs.claim_items, _CLAIM_BATCH)
            JOBS_PENDING.set(await anyio.to_thread.run_sync(self._jobs.pending_count))
            if not items:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll)
                continue
            try:
                await anyio.to_thread.run_sync(self._pipeline.process, items)
            except Exception:
                # The pipeline fails bad files one by one; reaching here means the store or the model failed
                # for the whole batch. Keep the worker alive, back off, and retry the batch.
                logger.exception("ingestion batch failed; retrying in %.1f s", self._retry_seconds)
                await asyncio.sleep(self._retry_seconds)
                await anyio.to_thread.run_sync(self._jobs.release_items, items)

    async def wait_idle(self, timeout_seconds: float = 600.0) -> None:
        """Wait until no document is pending or running (used by the CLI and tests)."""
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        while await anyio.to_thread.run_sync(self._jobs.pending_count):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("ingestion did not finish in time")
            await asyncio.sleep(0.05)
