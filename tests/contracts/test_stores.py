"""Contract tests of the storage seams. Every backend runs the same tests; today the embedded SQLite one.
A server backend joins by adding its factory to ``BACKENDS``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from ragserve.domain import DocumentInput, DocumentStatus, JobError, JobStatus, NewChunk, SearchFilters
from ragserve.errors import ConflictError, InvalidRequestError, NotFoundError
from ragserve.stores.analyzer import analyze
from ragserve.stores.sqlite import SqliteStore
from ragserve.stores.sqlite_db import SqliteDatabase
from ragserve.stores.sqlite_jobs import SqliteJobStore


class Backend:
    def __init__(self, store: SqliteStore, jobs: SqliteJobStore, close: Callable[[], None]) -> None:
        self.store, self.jobs, self.close = store, jobs, close


def _sqlite(tmp_path: Path) -> Backend:
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    return Backend(SqliteStore(db), SqliteJobStore(db), db.close)


BACKENDS = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = BACKENDS[request.param](tmp_path)
    yield made
    made.close()


def _chunk(ordinal: int, text: str) -> NewChunk:
    vector = np.zeros(4, dtype=np.float32)
    vector[ordinal % 4] = 1.0
    return NewChunk(ordinal, text, None, None, len(text.split()), f"hash-{text}", vector.tobytes())


def _ingest(b: Backend, texts: list[str], external_id: str | None = None, metadata: dict | None = None) -> str:
    item = DocumentInput(collection="c", external_id=external_id, text=" ".join(texts), metadata=metadata or {})
    job = b.jobs.create_job([item], None, None)
    (staged,) = b.jobs.claim_items(10)
    b.store.write_document(staged, "Title", "h", [_chunk(i, t) for i, t in enumerate(texts)])
    assert b.jobs.get_job(job.id).status is JobStatus.SUCCEEDED
    return job.document_ids[0]


def test_job_lifecycle_and_pending_document(backend: Backend) -> None:
    job = backend.jobs.create_job([DocumentInput(collection="c", text="x")], None, None)
    assert job.status is JobStatus.QUEUED
    assert job.progress.total == 1
    assert backend.store.get_document(job.document_ids[0]).status is DocumentStatus.PENDING
    (item,) = backend.jobs.claim_items(10)
    assert backend.jobs.get_job(job.id).status is JobStatus.RUNNING
    assert backend.jobs.claim_items(10) == []
    assert backend.jobs.requeue_running() == 1
    (again,) = backend.jobs.claim_items(10)
    assert again.document_id == item.document_id
    assert again.input.text == "x"


def test_failed_item_removes_a_new_document_but_keeps_an_existing_one(backend: Backend) -> None:
    doc_id = _ingest(backend, ["alpha beta"], external_id="e1")
    job = backend.jobs.create_job(
        [DocumentInput(collection="c", external_id="e1", text="new"), DocumentInput(collection="c", text="n")],
        None,
        None,
    )
    assert job.document_ids[0] == doc_id
    for item in backend.jobs.claim_items(10):
        backend.jobs.fail_item(item, JobError(item.document_id, None, "parse_error", "bad"))
    state = backend.jobs.get_job(job.id)
    assert state.status is JobStatus.FAILED
    assert [e.code for e in state.errors] == ["parse_error", "parse_error"]
    assert backend.store.get_document(doc_id).status is DocumentStatus.READY
    with pytest.raises(NotFoundError):
        backend.store.get_document(job.document_ids[1])


def test_idempotency_key(backend: Backend) -> None:
    items = [DocumentInput(collection="c", text="x")]
    first = backend.jobs.create_job(items, "k1", "hash-a")
    assert backend.jobs.create_job(items, "k1", "hash-a").id == first.id
    with pytest.raises(ConflictError):
        backend.jobs.create_job(items, "k1", "hash-b")


def test_rewrite_keeps_unchanged_chunks_and_reports_changes(backend: Backend) -> None:
    doc_id = _ingest(backend, ["one", "two", "three"], external_id="e")
    before = {c.text: c.id for c in backend.store.get_chunks(doc_id)}
    job = backend.jobs.create_job([DocumentInput(collection="c", external_id="e", text="...")], None, None)
    (item,) = backend.jobs.claim_items(10)
    changes = backend.store.write_document(item, "Title", "h2", [_chunk(0, "one"), _chunk(1, "four")])
    assert backend.jobs.get_job(job.id).status is JobStatus.SUCCEEDED
    after = {c.text: c.id for c in backend.store.get_chunks(doc_id)}
    assert after["one"] == before["one"]
    assert set(changes.removed) == {before["two"], before["three"]}
    assert changes.added == (after["four"],)
    assert len(changes.added_vectors) == 1
    assert backend.store.get_document(doc_id).chunk_count == 2


def test_keyword_search_filters_and_delete(backend: Backend) -> None:
    cats = _ingest(backend, ["cats purr and sleep"], metadata={"kind": "pet", "tags": ["a", "b"]})
    _ingest(backend, ["rockets burn fuel"], metadata={"kind": "space"})
    cid = backend.store.get_collection("c").id
    hits = backend.store.keyword_search(cid, analyze("sleeping cats"), 10, SearchFilters())
    assert len(hits) == 1
    (hit,) = backend.store.hits(hits)
    assert hit.document_id == cats
    assert hit.metadata["kind"] == "pet"
    pets = SearchFilters.from_mapping({"kind": "pet"})
    assert len(backend.store.chunk_ids(cid, pets)) == 1
    assert len(backend.store.chunk_ids(cid, SearchFilters.from_mapping({"kind": ["pet", "space"]}))) == 2
    assert len(backend.store.chunk_ids(cid, SearchFilters.from_mapping({"tags": "b"}))) == 1
    assert backend.store.keyword_search(cid, ["rocket"], 10, pets) == []
    with pytest.raises(InvalidRequestError):
        backend.store.chunk_ids(cid, SearchFilters((("bad key'", 1),)))
    collection_id, removed = backend.store.delete_document(cats)
    assert collection_id == cid
    assert len(removed) == 1
    assert backend.store.keyword_search(cid, analyze("cats"), 10, SearchFilters()) == []
    with pytest.raises(NotFoundError):
        backend.store.delete_document(cats)


def test_collection_summaries_count_documents(backend: Backend) -> None:
    assert backend.store.summarize_collections() == []
    first = _ingest(backend, ["one"], external_id="1")
    _ingest(backend, ["two"], external_id="2")
    backend.store.ensure_collection("empty")
    summaries = backend.store.summarize_collections()
    assert [(c.name, c.document_count) for c in summaries] == [("c", 2), ("empty", 0)]
    backend.store.delete_document(first)
    assert backend.store.summarize_collections()[0].document_count == 1


def test_embedding_cache_round_trip(backend: Backend) -> None:
    backend.store.put_vectors([("m:a", b"\x00" * 8), ("m:b", b"\x01" * 8)])
    assert backend.store.get_vectors(["m:a", "m:b", "m:c"]) == {"m:a": b"\x00" * 8, "m:b": b"\x01" * 8}


def test_keyword_scores_of_a_collection_ignore_other_collections(backend: Backend) -> None:
    """BM25 statistics (document frequency, average length) are per collection."""
    _ingest(backend, ["apple banana cherry"])
    cid = backend.store.get_collection("c").id
    before = backend.store.keyword_search(cid, analyze("apple"), 10, SearchFilters())
    for i in range(5):
        item = DocumentInput(collection="other", text=f"apple {i}")
        backend.jobs.create_job([item], None, None)
        (staged,) = backend.jobs.claim_items(10)
        backend.store.write_document(staged, "Other", f"h{i}", [_chunk(0, f"apple pie number {i}")])
    after = backend.store.keyword_search(cid, analyze("apple"), 10, SearchFilters())
    assert after == before
    other = backend.store.get_collection("other").id
    assert len(backend.store.keyword_search(other, analyze("apple"), 10, SearchFilters())) == 5
