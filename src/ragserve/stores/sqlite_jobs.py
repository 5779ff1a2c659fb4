"""Ingestion jobs in SQLite. A job stages its documents (the client's bytes, compressed) as items in the same
transaction that creates the pending document rows, so an accepted request survives a crash: a restarted
process puts items left ``running`` back to ``pending`` and the job goes on.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Sequence

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
    acl_to_json,
    decode_input,
    encode_input,
    error_json,
    job_status,
    job_tenant,
    within_bytes,
)
from ragserve.stores.protocol import StagedItem
from ragserve.stores.sqlite_db import SqliteDatabase, create_collection, parse_time, utc_now


class SqliteJobStore:
    """Implements ``JobStore`` over the shared database file; a collection first named by a job gets index
    version 1 configured by ``index_config``."""

    def __init__(self, db: SqliteDatabase, index_config: IndexConfig, outbox: OutboxPolicy | None = None) -> None:
        self._db = db
        self._config_json = config_to_json(index_config)
        self._outbox = outbox

    def create_job(self, inputs: Sequence[DocumentInput], idempotency_key: str | None, request_hash: str | None) -> Job:
        with self._db.write() as conn:
            if idempotency_key is not None:
                row = conn.execute(
                    "SELECT request_hash, job_id FROM idempotency_keys WHERE key = ?", (idempotency_key,)
                ).fetchone()
                if row is not None:
                    if row[0] != request_hash:
                        raise ConflictError("this Idempotency-Key was already used with a different request")
                    return self._job(conn, str(row[1]))
            job_id = uuid.uuid4().hex
            now = utc_now()
            conn.execute(
                "INSERT INTO jobs(id, kind, stage, total, created_at, updated_at, tenant) "
                "VALUES (?, 'ingest', ?, ?, ?, ?, ?)",
                (job_id, "queued", len(inputs), now, now, job_tenant(inputs)),
            )
            for seq, item in enumerate(inputs):
                document_id = self._stage_document(conn, item, now)
                conn.execute(
                    "INSERT INTO job_items(job_id, seq, document_id, status, payload) VALUES (?, ?, ?, 'pending', ?)",
                    (job_id, seq, document_id, encode_input(item)),
                )
            if idempotency_key is not None:
                conn.execute(
                    "INSERT INTO idempotency_keys(key, request_hash, job_id, created_at) VALUES (?, ?, ?, ?)",
                    (idempotency_key, request_hash or "", job_id, now),
                )
            if self._outbox is not None:
                self._write_outbox(conn, job_id, list(range(len(inputs))))
            return self._job(conn, job_id)

    def _write_outbox(self, conn: sqlite3.Connection, job_id: str, seqs: list[int]) -> None:
        assert self._outbox is not None
        rows = [
            (job_id, json.dumps(group), self._outbox.priority(len(seqs)), time.time())
            for group in self._outbox.messages(seqs)
        ]
        conn.executemany("INSERT INTO outbox(job_id, seqs, priority, created_at) VALUES (?, ?, ?, ?)", rows)

    # --- leases, dead letters and the outbox (``LeasedJobStore``) -------------------------------------------

    def claim_leased(
        self, job_id: str, seqs: Sequence[int], owner: str, lease_seconds: float
    ) -> tuple[list[StagedItem], int]:
        now = time.time()
        marks = ", ".join("?" for _ in seqs)
        with self._db.write() as conn:
            rows = conn.execute(
                "SELECT i.seq, i.document_id, d.collection_id, i.payload, i.status, i.lease_expires "
                "FROM job_items i LEFT JOIN documents d ON d.id = i.document_id "
                f"WHERE i.job_id = ? AND i.seq IN ({marks}) ORDER BY i.seq",
                [job_id, *seqs],
            ).fetchall()
            items: list[StagedItem] = []
            held = 0
            for seq, document_id, collection_id, payload, status, expires in rows:
                if status == "running" and expires is not None and expires > now:
                    held += 1
                    continue
                if status not in ("pending", "running"):
                    continue  # done, failed or dead: a redelivered message changes nothing
                if collection_id is None:  # deleted before it was ingested
                    conn.execute(
                        "UPDATE job_items SET status = 'done', payload = NULL WHERE job_id = ? AND seq = ?",
                        (job_id, seq),
                    )
                    continue
                conn.execute(
                    "UPDATE job_items SET status = 'running', lease_owner = ?, lease_expires = ?, "
                    "attempts = attempts + 1 WHERE job_id = ? AND seq = ?",
                    (owner, now + lease_seconds, job_id, seq),
                )
                items.append(StagedItem(job_id, seq, document_id, collection_id, decode_input(payload)))
            return items, held

    def extend_lease(self, owner: str, items: Sequence[StagedItem], lease_seconds: float) -> None:
        with self._db.write() as conn:
            conn.executemany(
                "UPDATE job_items SET lease_expires = ? WHERE job_id = ? AND seq = ? AND lease_owner = ? "
                "AND status = 'running'",
                [(time.time() + lease_seconds, i.job_id, i.seq, owner) for i in items],
            )

    def dead_letter(self, items: Sequence[StagedItem], error: JobError) -> None:
        with self._db.write() as conn:
            for item in items:
                detail = JobError(item.document_id, item.input.filename, error.code, error.message)
                conn.execute(
                    "UPDATE job_items SET status = 'dead', error = ?, lease_owner = NULL, lease_expires = NULL "
                    "WHERE job_id = ? AND seq = ? AND status IN ('pending', 'running')",
                    (error_json(detail), item.job_id, item.seq),
                )
                conn.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (utc_now(), item.job_id))

    def list_dead(self, limit: int) -> list[DeadLetter]:
        rows = self._db.fetchall(
            "SELECT i.job_id, i.seq, i.document_id, i.error, j.updated_at FROM job_items i "
            "JOIN jobs j ON j.id = i.job_id WHERE i.status = 'dead' ORDER BY j.updated_at DESC, i.seq LIMIT ?",
            (limit,),
        )
        return [
            DeadLetter(str(r[0]), int(r[1]), str(r[2]), JobError(**json.loads(r[3])), parse_time(str(r[4])))
            for r in rows
        ]

    def requeue_dead(self, job_id: str | None) -> int:
        with self._db.write() as conn:
            where, params = ("AND job_id = ?", [job_id]) if job_id else ("", [])
            rows = conn.execute(
                f"SELECT job_id, seq FROM job_items WHERE status = 'dead' {where} ORDER BY job_id, seq", params
            ).fetchall()
            by_job: dict[str, list[int]] = {}
            for jid, seq in rows:
                by_job.setdefault(str(jid), []).append(int(seq))
            for jid, seqs in by_job.items():
                conn.executemany(
                    "UPDATE job_items SET status = 'pending', error = NULL, attempts = 0 WHERE job_id = ? AND seq = ?",
                    [(jid, seq) for seq in seqs],
                )
                if self._outbox is not None:
                    self._write_outbox(conn, jid, seqs)
            return len(rows)

    def unpublished(self, limit: int, republish_after_seconds: float) -> list[QueueMessage]:
        stale = time.time() - republish_after_seconds
        rows = self._db.fetchall(
            "SELECT o.id, o.job_id, o.seqs, o.priority FROM outbox o WHERE o.published_at IS NULL "
            "OR (o.published_at < ? AND EXISTS (SELECT 1 FROM job_items i, json_each(o.seqs) s "
            "WHERE i.job_id = o.job_id AND i.seq = s.value AND (i.status = 'pending' "
            "OR (i.status = 'running' AND i.lease_expires < ?)))) ORDER BY o.id LIMIT ?",
            (stale, time.time(), limit),
        )
        return [QueueMessage(int(r[0]), str(r[1]), tuple(json.loads(r[2])), int(r[3])) for r in rows]

    def mark_published(self, ids: Sequence[int]) -> None:
        with self._db.write() as conn:
            conn.executemany("UPDATE outbox SET published_at = ? WHERE id = ?", [(time.time(), i) for i in ids])
            # Rows whose items are all finished are no longer needed.
            conn.execute(
                "DELETE FROM outbox WHERE published_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM job_items i, "
                "json_each(outbox.seqs) s WHERE i.job_id = outbox.job_id AND i.seq = s.value "
                "AND i.status IN ('pending', 'running'))"
            )

    def expired_leases(self) -> int:
        row = self._db.fetchone(
            "SELECT count(*) FROM job_items WHERE status = 'running' AND lease_expires < ?", (time.time(),)
        )
        return int(row[0])

    def _stage_document(self, conn: sqlite3.Connection, item: DocumentInput, now: str) -> str:
        """The id of the document this input writes: an existing one with the same external id, or a new
        pending row (which disappears again if its ingestion fails)."""
        collection_id = create_collection(conn, item.collection, item.tenant, self._config_json)
        if item.external_id is not None:
            row = conn.execute(
                "SELECT id FROM documents WHERE collection_id = ? AND external_id = ?",
                (collection_id, item.external_id),
            ).fetchone()
            if row is not None:
                return str(row[0])
        document_id = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO documents(id, collection_id, external_id, title, source, metadata, acl, restricted, status, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                document_id,
                collection_id,
                item.external_id,
                item.title or item.filename,
                item.filename or item.external_id,
                json.dumps(item.metadata),
                None if item.acl is None else json.dumps(acl_to_json(item.acl)),
                int(item.acl is not None and not item.acl.public),
                DocumentStatus.PENDING.value,
                now,
                now,
            ),
        )
        return document_id

    def get_job(self, job_id: str) -> Job:
        with self._db.reading() as conn:
            return self._job(conn, job_id)

    @staticmethod
    def _job(conn: sqlite3.Connection, job_id: str) -> Job:
        row = conn.execute(
            "SELECT id, kind, stage, total, created_at, updated_at, tenant FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"job {job_id!r} not found")
        counts = dict(
            conn.execute("SELECT status, count(*) FROM job_items WHERE job_id = ? GROUP BY status", (job_id,))
        )
        errors = tuple(
            JobError(**json.loads(r[0]))
            for r in conn.execute(
                "SELECT error FROM job_items WHERE job_id = ? AND status IN ('failed', 'dead') ORDER BY seq", (job_id,)
            )
        )
        document_ids = tuple(
            str(r[0])
            for r in conn.execute("SELECT document_id FROM job_items WHERE job_id = ? ORDER BY seq", (job_id,))
        )
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
            document_ids=document_ids,
            created_at=parse_time(str(row[4])),
            updated_at=parse_time(str(row[5])),
            tenant=str(row[6]),
        )

    def claim_items(self, limit: int, max_bytes: int | None = None) -> list[StagedItem]:
        with self._db.write() as conn:
            # Sizes first, so that payloads past the byte budget are never read.
            sized = conn.execute(
                "SELECT rowid, length(payload) FROM job_items WHERE status = 'pending' ORDER BY rowid LIMIT ?",
                (limit,),
            ).fetchall()
            if not sized:
                return []
            last = sized[within_bytes([r[1] for r in sized], max_bytes) - 1][0]
            rows = conn.execute(
                "SELECT i.job_id, i.seq, i.document_id, d.collection_id, i.payload FROM job_items i "
                "LEFT JOIN documents d ON d.id = i.document_id WHERE i.status = 'pending' AND i.rowid <= ? "
                "ORDER BY i.rowid LIMIT ?",
                (last, limit),
            ).fetchall()
            items: list[StagedItem] = []
            for job_id, seq, document_id, collection_id, payload in rows:
                if collection_id is None:  # deleted before it was ingested: nothing to do
                    conn.execute(
                        "UPDATE job_items SET status = 'done', payload = NULL WHERE job_id = ? AND seq = ?",
                        (job_id, seq),
                    )
                    continue
                conn.execute("UPDATE job_items SET status = 'running' WHERE job_id = ? AND seq = ?", (job_id, seq))
                items.append(StagedItem(job_id, seq, document_id, collection_id, decode_input(payload)))
            return items

    def fail_item(self, item: StagedItem, error: JobError) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE job_items SET status = 'failed', payload = NULL, error = ? WHERE job_id = ? AND seq = ?",
                (error_json(error), item.job_id, item.seq),
            )
            conn.execute(
                "DELETE FROM documents WHERE id = ? AND status = ?",
                (item.document_id, DocumentStatus.PENDING.value),
            )
            conn.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (utc_now(), item.job_id))

    def set_stage(self, job_id: str, stage: str) -> None:
        with self._db.write() as conn:
            conn.execute("UPDATE jobs SET stage = ?, updated_at = ? WHERE id = ?", (stage, utc_now(), job_id))

    def release_items(self, items: Sequence[StagedItem]) -> None:
        """Put claimed items back to pending (their batch failed as a whole; they will be retried)."""
        with self._db.write() as conn:
            conn.executemany(
                "UPDATE job_items SET status = 'pending' WHERE job_id = ? AND seq = ? AND status = 'running'",
                [(item.job_id, item.seq) for item in items],
            )

    def requeue_running(self) -> int:
        with self._db.write() as conn:
            return conn.execute("UPDATE job_items SET status = 'pending' WHERE status = 'running'").rowcount

    def pending_count(self) -> int:
        row = self._db.fetchone("SELECT count(*) FROM job_items WHERE status IN ('pending', 'running')")
        return int(row[0])
