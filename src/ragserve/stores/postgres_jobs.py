"""Ingestion jobs in PostgreSQL, with the semantics of ``sqlite_jobs.py``: a job stages its documents as items
in the transaction that creates their pending document rows (and, for a broker, the outbox rows that publish
them), so an accepted request survives a crash.

Many processes share these tables: items are claimed with ``FOR UPDATE SKIP LOCKED``, so two workers never
claim one item and neither waits for the other. All reads are from the primary: a job is read right after it
is written.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from ragserve.domain import (
    DeadLetter,
    DocumentInput,
    DocumentStatus,
    IndexConfig,
    Job,
    JobError,
    JobProgress,
    JobStatus,
    QueueMessage,
)
from ragserve.errors import ConflictError, NotFoundError
from ragserve.stores.codec import config_to_json
from ragserve.stores.job_records import (
    OutboxPolicy,
    decode_input,
    encode_input,
    error_json,
    job_status,
    job_tenant,
    within_bytes,
)
from ragserve.stores.postgres import acl_json, create_collection, is_restricted
from ragserve.stores.postgres_db import Connection, PostgresDatabase, utc_now
from ragserve.stores.protocol import StagedItem


class PostgresJobStore:
    """Implements ``LeasedJobStore`` (and so ``JobStore``); a collection first named by a job gets index
    version 1 configured by ``index_config``. With ``outbox``, jobs also write outbox rows for a broker."""

    def __init__(self, db: PostgresDatabase, index_config: IndexConfig, outbox: OutboxPolicy | None = None) -> None:
        self._db = db
        self._config_json = config_to_json(index_config)
        self._outbox = outbox

    def create_job(self, inputs: Sequence[DocumentInput], idempotency_key: str | None, request_hash: str | None) -> Job:
        with self._db.write() as conn:
            job_id = uuid.uuid4().hex
            now = utc_now()
            if idempotency_key is not None:
                # Claim the key first: a concurrent request with the same key waits here, then sees this job.
                claimed = conn.execute(
                    "INSERT INTO idempotency_keys(key, request_hash, job_id, created_at) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (key) DO NOTHING RETURNING key",
                    (idempotency_key, request_hash or "", job_id, now),
                ).fetchone()
                if claimed is None:
                    row = conn.execute(
                        "SELECT request_hash, job_id FROM idempotency_keys WHERE key = %s", (idempotency_key,)
                    ).fetchone()
                    assert row is not None
                    if row[0] != (request_hash or ""):
                        raise ConflictError("this Idempotency-Key was already used with a different request")
                    return self._job(conn, str(row[1]))
            conn.execute(
                "INSERT INTO jobs(id, kind, stage, total, created_at, updated_at, tenant) "
                "VALUES (%s, 'ingest', 'queued', %s, %s, %s, %s)",
                (job_id, len(inputs), now, now, job_tenant(inputs)),
            )
            rows = [
                (job_id, seq, self._stage_document(conn, item, now), encode_input(item))
                for seq, item in enumerate(inputs)
            ]
            conn.cursor().executemany(
                "INSERT INTO job_items(job_id, seq, document_id, status, payload) VALUES (%s, %s, %s, 'pending', %s)",
                rows,
            )
            if self._outbox is not None:
                self._write_outbox(conn, job_id, list(range(len(inputs))))
            return self._job(conn, job_id)

    def _write_outbox(self, conn: Connection, job_id: str, seqs: list[int]) -> None:
        assert self._outbox is not None
        rows = [
            (job_id, Jsonb(group), self._outbox.priority(len(seqs)), time.time())
            for group in self._outbox.messages(seqs)
        ]
        conn.cursor().executemany(
            "INSERT INTO outbox(job_id, seqs, priority, created_at) VALUES (%s, %s, %s, %s)", rows
        )

    def _stage_document(self, conn: Connection, item: DocumentInput, now: datetime) -> str:
        """The id of the document this input writes: an existing one with the same external id, or a new
        pending row (which disappears again if its ingestion fails)."""
        collection_id = create_collection(conn, item.collection, item.tenant, self._config_json)
        document_id = str(uuid.uuid4())
        row = conn.execute(
            "INSERT INTO documents(id, collection_id, external_id, title, source, metadata, acl, restricted, status, "
            "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (collection_id, external_id) WHERE external_id IS NOT NULL DO NOTHING RETURNING id",
            (
                document_id,
                collection_id,
                item.external_id,
                item.title or item.filename,
                item.filename or item.external_id,
                Jsonb(item.metadata),
                acl_json(item.acl),
                is_restricted(item.acl),
                DocumentStatus.PENDING.value,
                now,
                now,
            ),
        ).fetchone()
        if row is not None:
            return str(row[0])
        existing = conn.execute(
            "SELECT id FROM documents WHERE collection_id = %s AND external_id = %s", (collection_id, item.external_id)
        ).fetchone()
        assert existing is not None
        return str(existing[0])

    def get_job(self, job_id: str) -> Job:
        with self._db.primary() as conn:
            return self._job(conn, job_id)

    @staticmethod
    def _job(conn: Connection, job_id: str) -> Job:
        row = conn.execute(
            "SELECT id, kind, stage, total, created_at, updated_at, tenant FROM jobs WHERE id = %s", (job_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"job {job_id!r} not found")
        items = conn.execute(
            "SELECT document_id, status, error FROM job_items WHERE job_id = %s ORDER BY seq", (job_id,)
        ).fetchall()
        counts: dict[str, int] = {}
        for _, status, _ in items:
            counts[str(status)] = counts.get(str(status), 0) + 1
        errors = tuple(JobError(**json.loads(str(error))) for _, status, error in items if status in ("failed", "dead"))
        total = int(row[3])
        status = job_status(counts, total)
        finished = counts.get("done", 0) + counts.get("failed", 0) + counts.get("dead", 0)
        stage = "done" if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.PARTIAL) else str(row[2])
        return Job(
            id=str(row[0]),
            kind=str(row[1]),
            status=status,
            progress=JobProgress(stage=stage, done=finished, total=total),
            errors=errors,
            document_ids=tuple(str(document_id) for document_id, _, _ in items),
            created_at=row[4],
            updated_at=row[5],
            tenant=str(row[6]),
        )

    def claim_items(self, limit: int, max_bytes: int | None = None) -> list[StagedItem]:
        with self._db.write() as conn:
            # Lock first and read sizes only, so that payloads past the byte budget are never read; the rows
            # locked but not taken stay pending and are unlocked at commit.
            locked = conn.execute(
                "SELECT job_id, seq, octet_length(payload) FROM job_items WHERE status = 'pending' "
                "ORDER BY position LIMIT %s FOR UPDATE SKIP LOCKED",
                (limit,),
            ).fetchall()
            taken = locked[: within_bytes([r[2] for r in locked], max_bytes)]
            if not taken:
                return []
            rows = conn.execute(
                "SELECT i.job_id, i.seq, i.document_id, d.collection_id, i.payload FROM job_items i "
                "LEFT JOIN documents d ON d.id = i.document_id "
                "WHERE (i.job_id, i.seq) IN (SELECT * FROM unnest(%s::text[], %s::int[])) ORDER BY i.position",
                ([r[0] for r in taken], [r[1] for r in taken]),
            ).fetchall()
            return self._take(conn, rows, "UPDATE job_items SET status = 'running' WHERE job_id = %s AND seq = %s")

    @staticmethod
    def _take(conn: Connection, rows: Sequence[tuple[Any, ...]], claim_sql: str, *extra: object) -> list[StagedItem]:
        """Mark claimed rows (job_id, seq, document_id, collection_id, payload) with ``claim_sql``; an item
        whose document was deleted before it was ingested is done, with nothing to do."""
        gone = [(r[0], r[1]) for r in rows if r[3] is None]
        claimed = [r for r in rows if r[3] is not None]
        cursor = conn.cursor()
        if gone:
            cursor.executemany(
                "UPDATE job_items SET status = 'done', payload = NULL WHERE job_id = %s AND seq = %s", gone
            )
        if claimed:
            cursor.executemany(claim_sql, [(*extra, r[0], r[1]) for r in claimed])
        return [StagedItem(str(r[0]), int(r[1]), str(r[2]), str(r[3]), decode_input(bytes(r[4]))) for r in claimed]

    def fail_item(self, item: StagedItem, error: JobError) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE job_items SET status = 'failed', payload = NULL, error = %s WHERE job_id = %s AND seq = %s",
                (error_json(error), item.job_id, item.seq),
            )
            conn.execute(
                "DELETE FROM documents WHERE id = %s AND status = %s", (item.document_id, DocumentStatus.PENDING.value)
            )
            conn.execute("UPDATE jobs SET updated_at = %s WHERE id = %s", (utc_now(), item.job_id))

    def set_stage(self, job_id: str, stage: str) -> None:
        with self._db.write() as conn:
            conn.execute("UPDATE jobs SET stage = %s, updated_at = %s WHERE id = %s", (stage, utc_now(), job_id))

    def release_items(self, items: Sequence[StagedItem]) -> None:
        """Put claimed items back to pending (their batch failed as a whole; they will be retried)."""
        if items:
            with self._db.write() as conn:
                conn.cursor().executemany(
                    "UPDATE job_items SET status = 'pending' WHERE job_id = %s AND seq = %s AND status = 'running'",
                    [(item.job_id, item.seq) for item in items],
                )

    def requeue_running(self) -> int:
        """Every running item back to pending, as in SQLite: call it only where no other process is working
        (with several processes, leases expire instead: ``claim_leased``)."""
        with self._db.write() as conn:
            return conn.execute("UPDATE job_items SET status = 'pending' WHERE status = 'running'").rowcount

    def pending_count(self) -> int:
        with self._db.primary() as conn:
            row = conn.execute("SELECT count(*) FROM job_items WHERE status IN ('pending', 'running')").fetchone()
        return int(row[0]) if row else 0

    # --- leases, dead letters and the outbox (``LeasedJobStore``) -------------------------------------------

    def claim_leased(
        self, job_id: str, seqs: Sequence[int], owner: str, lease_seconds: float
    ) -> tuple[list[StagedItem], int]:
        now = time.time()
        with self._db.write() as conn:
            rows = conn.execute(
                "SELECT i.job_id, i.seq, i.document_id, d.collection_id, i.payload, i.status, i.lease_expires "
                "FROM job_items i LEFT JOIN documents d ON d.id = i.document_id "
                "WHERE i.job_id = %s AND i.seq = ANY(%s) ORDER BY i.seq FOR UPDATE OF i",
                (job_id, list(seqs)),
            ).fetchall()
            held = sum(1 for r in rows if r[5] == "running" and r[6] is not None and r[6] > now)
            # Done, failed or dead items stay as they are: a redelivered message changes nothing.
            free = [r[:5] for r in rows if r[5] == "pending" or (r[5] == "running" and not (r[6] and r[6] > now))]
            items = self._take(
                conn,
                free,
                "UPDATE job_items SET status = 'running', lease_owner = %s, lease_expires = %s, "
                "attempts = attempts + 1 WHERE job_id = %s AND seq = %s",
                owner,
                now + lease_seconds,
            )
            return items, held

    def extend_lease(self, owner: str, items: Sequence[StagedItem], lease_seconds: float) -> None:
        if items:
            with self._db.write() as conn:
                conn.cursor().executemany(
                    "UPDATE job_items SET lease_expires = %s WHERE job_id = %s AND seq = %s AND lease_owner = %s "
                    "AND status = 'running'",
                    [(time.time() + lease_seconds, i.job_id, i.seq, owner) for i in items],
                )

    def dead_letter(self, items: Sequence[StagedItem], error: JobError) -> None:
        with self._db.write() as conn:
            for item in items:
                detail = JobError(item.document_id, item.input.filename, error.code, error.message)
                conn.execute(
                    "UPDATE job_items SET status = 'dead', error = %s, lease_owner = NULL, lease_expires = NULL "
                    "WHERE job_id = %s AND seq = %s AND status IN ('pending', 'running')",
                    (error_json(detail), item.job_id, item.seq),
                )
                conn.execute("UPDATE jobs SET updated_at = %s WHERE id = %s", (utc_now(), item.job_id))

    def list_dead(self, limit: int) -> list[DeadLetter]:
        with self._db.primary() as conn:
            rows = conn.execute(
                "SELECT i.job_id, i.seq, i.document_id, i.error, j.updated_at FROM job_items i "
                "JOIN jobs j ON j.id = i.job_id WHERE i.status = 'dead' ORDER BY j.updated_at DESC, i.seq LIMIT %s",
                (limit,),
            ).fetchall()
        return [DeadLetter(str(r[0]), int(r[1]), str(r[2]), JobError(**json.loads(r[3])), r[4]) for r in rows]

    def requeue_dead(self, job_id: str | None) -> int:
        with self._db.write() as conn:
            rows = conn.execute(
                "UPDATE job_items SET status = 'pending', error = NULL, attempts = 0 "
                "WHERE status = 'dead' AND (%s::text IS NULL OR job_id = %s) RETURNING job_id, seq",
                (job_id, job_id),
            ).fetchall()
            by_job: dict[str, list[int]] = {}
            for jid, seq in rows:
                by_job.setdefault(str(jid), []).append(int(seq))
            if self._outbox is not None:
                for jid, seqs in sorted(by_job.items()):
                    self._write_outbox(conn, jid, sorted(seqs))
            return len(rows)

    def unpublished(self, limit: int, republish_after_seconds: float) -> list[QueueMessage]:
        now = time.time()
        with self._db.primary() as conn:
            rows = conn.execute(
                "SELECT o.id, o.job_id, o.seqs, o.priority FROM outbox o WHERE o.published_at IS NULL "
                "OR (o.published_at < %s AND EXISTS (SELECT 1 FROM job_items i "
                "WHERE i.job_id = o.job_id AND i.seq IN (SELECT jsonb_array_elements_text(o.seqs)::int) "
                "AND (i.status = 'pending' OR (i.status = 'running' AND i.lease_expires < %s)))) "
                "ORDER BY o.id LIMIT %s",
                (now - republish_after_seconds, now, limit),
            ).fetchall()
        return [QueueMessage(int(r[0]), str(r[1]), tuple(int(s) for s in r[2]), int(r[3])) for r in rows]

    def mark_published(self, ids: Sequence[int]) -> None:
        with self._db.write() as conn:
            conn.execute("UPDATE outbox SET published_at = %s WHERE id = ANY(%s)", (time.time(), list(ids)))
            # Rows whose items are all finished are no longer needed.
            conn.execute(
                "DELETE FROM outbox o WHERE o.published_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM job_items i "
                "WHERE i.job_id = o.job_id AND i.seq IN (SELECT jsonb_array_elements_text(o.seqs)::int) "
                "AND i.status IN ('pending', 'running'))"
            )

    def expired_leases(self) -> int:
        with self._db.primary() as conn:
            row = conn.execute(
                "SELECT count(*) FROM job_items WHERE status = 'running' AND lease_expires < %s", (time.time(),)
            ).fetchone()
        return int(row[0]) if row else 0
