"""Contract tests of ``LeasedJobStore``: the job store behind the broker-driven workers. Every backend that
serves ``queue.backend=rabbitmq`` runs them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ragserve.domain import DocumentInput, IndexConfig, JobError, JobStatus
from ragserve.stores.job_records import OutboxPolicy
from ragserve.stores.postgres_db import PostgresDatabase, VectorIndexSpec, migrate
from ragserve.stores.postgres_jobs import PostgresJobStore
from ragserve.stores.protocol import LeasedJobStore
from ragserve.stores.sqlite_db import SqliteDatabase
from ragserve.stores.sqlite_jobs import SqliteJobStore

CONFIG = IndexConfig(max_tokens=200, overlap_tokens=40, model="test-model")
POLICY = OutboxPolicy(items_per_message=2, small_job_items=2)


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[LeasedJobStore, Callable[[], None]]:
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    return SqliteJobStore(db, CONFIG, POLICY), db.close


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[LeasedJobStore, Callable[[], None]]:
    url = request.getfixturevalue("postgres_url")  # a database of this test's own
    migrate(url, VectorIndexSpec(dimension=4))
    db = PostgresDatabase(url)
    return PostgresJobStore(db, CONFIG, POLICY), db.close


LEASED_BACKENDS = {"sqlite": _sqlite, "postgres": _postgres}


@pytest.fixture(params=sorted(LEASED_BACKENDS))
def jobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LeasedJobStore]:
    store, close = LEASED_BACKENDS[request.param](request, tmp_path)
    yield store
    close()


def _inputs(n: int) -> list[DocumentInput]:
    return [DocumentInput(collection="c", external_id=f"d{i}", text=f"text {i}") for i in range(n)]


def test_a_job_writes_its_messages_to_the_outbox_with_priorities(jobs: LeasedJobStore) -> None:
    small = jobs.create_job(_inputs(2), None, None)
    large = jobs.create_job(_inputs(5), None, None)
    messages = jobs.unpublished(100, republish_after_seconds=60)
    assert [(m.job_id, m.seqs) for m in messages] == [
        (small.id, (0, 1)),
        (large.id, (0, 1)),
        (large.id, (2, 3)),
        (large.id, (4,)),
    ]
    assert messages[0].priority > messages[1].priority  # small jobs first
    jobs.mark_published([m.id for m in messages[:2]])
    assert [m.seqs for m in jobs.unpublished(100, republish_after_seconds=60)] == [(2, 3), (4,)]


def test_published_messages_whose_items_still_wait_are_published_again(jobs: LeasedJobStore) -> None:
    job = jobs.create_job(_inputs(1), None, None)
    (message,) = jobs.unpublished(10, republish_after_seconds=60)
    jobs.mark_published([message.id])
    assert jobs.unpublished(10, republish_after_seconds=60) == []
    time.sleep(0.05)
    (again,) = jobs.unpublished(10, republish_after_seconds=0.01)
    assert again.job_id == job.id


def test_leases_exclude_live_workers_and_expire(jobs: LeasedJobStore) -> None:
    job = jobs.create_job(_inputs(2), None, None)
    items, held = jobs.claim_leased(job.id, [0, 1], "worker-a", lease_seconds=0.3)
    assert ([i.seq for i in items], held) == ([0, 1], 0)
    assert items[0].input.external_id == "d0"
    # Another worker given the same (redelivered) message must wait for the live lease.
    assert jobs.claim_leased(job.id, [0, 1], "worker-b", lease_seconds=10) == ([], 2)
    jobs.extend_lease("worker-a", items, lease_seconds=0.3)
    assert jobs.expired_leases() == 0
    time.sleep(0.4)  # worker-a died: no heartbeat
    assert jobs.expired_leases() == 2
    taken, held = jobs.claim_leased(job.id, [0, 1], "worker-b", lease_seconds=10)
    assert ([i.seq for i in taken], held) == ([0, 1], 0)
    assert jobs.expired_leases() == 0


def test_finished_items_are_never_claimed_again(jobs: LeasedJobStore) -> None:
    job = jobs.create_job(_inputs(2), None, None)
    items, _ = jobs.claim_leased(job.id, [0, 1], "w", lease_seconds=10)
    jobs.fail_item(items[1], JobError(items[1].document_id, None, "parse_error", "bad"))
    assert jobs.claim_leased(job.id, [1], "w2", lease_seconds=10) == ([], 0)


def test_dead_letters_keep_their_input_and_can_be_requeued(jobs: LeasedJobStore) -> None:
    job = jobs.create_job(_inputs(3), None, None)
    for m in jobs.unpublished(10, republish_after_seconds=60):
        jobs.mark_published([m.id])
    items, _ = jobs.claim_leased(job.id, [0, 1], "w", lease_seconds=10)
    jobs.dead_letter(items, JobError(None, None, "embedding_error", "model crashed"))
    state = jobs.get_job(job.id)
    assert [e.code for e in state.errors] == ["embedding_error", "embedding_error"]
    assert state.progress.done == 2
    dead = jobs.list_dead(10)
    assert {(d.job_id, d.seq) for d in dead} == {(job.id, 0), (job.id, 1)}
    assert dead[0].error.message == "model crashed"
    # The document stays (pending) so the requeue can still ingest it.
    assert jobs.claim_leased(job.id, [0], "w", lease_seconds=10) == ([], 0)
    assert jobs.requeue_dead(job.id) == 2
    assert jobs.list_dead(10) == []
    requeued = jobs.get_job(job.id)
    assert (requeued.status, requeued.errors, requeued.progress.done) == (JobStatus.QUEUED, (), 0)
    (message,) = jobs.unpublished(10, republish_after_seconds=60)
    assert message.seqs == (0, 1)
    again, _ = jobs.claim_leased(job.id, list(message.seqs), "w2", lease_seconds=10)
    assert [i.input.text for i in again] == ["text 0", "text 1"]
