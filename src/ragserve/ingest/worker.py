"""Processing one broker message: lease its job items, keep the lease alive while the pipeline runs, and
leave every item finished, or retryable, or dead-lettered on the last attempt.

Exactly-once in effect over an at-least-once broker: items already finished are skipped, items another live
worker holds make the message retry later, and a document write keeps identical chunks (content hashes), so
a message redelivered after a crash, or run twice, never duplicates a chunk.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence

from ragserve.domain import JobError
from ragserve.errors import RagserveError
from ragserve.ingest.pipeline import IngestPipeline
from ragserve.observability.tracing import start_span
from ragserve.stores.protocol import LeasedJobStore, StagedItem

logger = logging.getLogger(__name__)


class ItemsLeasedElsewhereError(RagserveError):
    """Some of the message's items are leased by another live worker: retry the message later."""

    code = "items_leased_elsewhere"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class _Heartbeat:
    """Extends the lease on ``items`` every ``interval`` seconds until stopped."""

    def __init__(self, jobs: LeasedJobStore, owner: str, items: Sequence[StagedItem], lease: float, interval: float):
        self._jobs, self._owner, self._items, self._lease, self._interval = jobs, owner, items, lease, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._jobs.extend_lease(self._owner, self._items, self._lease)
            except Exception:  # a missed beat is survivable; the next one may reach the database
                logger.exception("could not extend a lease")

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class LeasedIngestion:
    """The body of the ingestion actor."""

    def __init__(
        self,
        jobs: LeasedJobStore,
        pipeline: IngestPipeline,
        lease_seconds: float,
        heartbeat_seconds: float,
        owner: str | None = None,
    ) -> None:
        self._jobs = jobs
        self._pipeline = pipeline
        self._lease = lease_seconds
        self._heartbeat = heartbeat_seconds
        self.owner = owner or worker_id()

    def handle(self, job_id: str, seqs: Sequence[int], final_attempt: bool) -> int:
        """Ingest the message's items; returns how many this call processed. Raises to have the message
        retried: ``ItemsLeasedElsewhereError``, or the error that failed the whole batch (after dead-lettering
        the items on the ``final_attempt``)."""
        items, held = self._jobs.claim_leased(job_id, seqs, self.owner, self._lease)
        if items:
            with _Heartbeat(self._jobs, self.owner, items, self._lease, self._heartbeat):
                try:
                    with start_span("ragserve.ingest", {"ragserve.documents": len(items)}):
                        self._pipeline.process(items)
                except Exception as exc:
                    # The pipeline fails bad files one by one; this is the store or the model failing the batch.
                    if final_attempt:
                        message = exc.message if isinstance(exc, RagserveError) else type(exc).__name__
                        self._jobs.dead_letter(items, JobError(None, None, "retries_exhausted", message))
                        logger.error("job %s items %s dead-lettered: %s", job_id, list(seqs), message)
                    else:
                        self._jobs.release_items(items)  # the retry claims them again at once
                    raise
        if held:
            raise ItemsLeasedElsewhereError(f"{held} items of job {job_id} are leased by another worker")
        return len(items)
