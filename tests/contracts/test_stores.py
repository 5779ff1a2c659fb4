"""Contract tests of the storage seams. Every backend runs the same tests: the embedded SQLite one and
PostgreSQL (``tests/postgres.py`` provides the server). A backend joins by adding its factory to ``BACKENDS``."""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from ragserve.domain import (
    DocumentInput,
    DocumentStatus,
    IndexConfig,
    IndexState,
    JobError,
    JobStatus,
    NewChunk,
    ParsedDocument,
    SearchFilters,
    TextBlock,
)
from ragserve.errors import ConflictError, IndexVersionsChangedError, InvalidRequestError, NotFoundError
from ragserve.stores.analyzer import analyze
from ragserve.stores.job_records import encode_input
from ragserve.stores.postgres import PostgresStore
from ragserve.stores.postgres_db import PostgresDatabase, VectorIndexSpec, migrate
from ragserve.stores.postgres_jobs import PostgresJobStore
from ragserve.stores.postgres_versions import PostgresIndexVersions
from ragserve.stores.protocol import ChunkChanges, DocumentFingerprint, DocumentWrite, StagedItem
from ragserve.stores.sqlite import SqliteStore
from ragserve.stores.sqlite_db import SqliteDatabase
from ragserve.stores.sqlite_jobs import SqliteJobStore
from ragserve.stores.sqlite_versions import SqliteIndexVersions

CONFIG = IndexConfig(max_tokens=200, overlap_tokens=40, model="test-model")


class Backend:
    def __init__(
        self,
        store: SqliteStore | PostgresStore,
        jobs: SqliteJobStore | PostgresJobStore,
        versions: SqliteIndexVersions | PostgresIndexVersions,
        close: Callable[[], None],
    ) -> None:
        self.store, self.jobs, self.versions, self.close = store, jobs, versions, close


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    return Backend(SqliteStore(db, CONFIG), SqliteJobStore(db, CONFIG), SqliteIndexVersions(db), db.close)


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    url = request.getfixturevalue("postgres_url")  # a database of this test's own
    migrate(url, VectorIndexSpec(dimension=4))
    db = PostgresDatabase(url)
    return Backend(PostgresStore(db, CONFIG), PostgresJobStore(db, CONFIG), PostgresIndexVersions(db), db.close)


BACKENDS = {"sqlite": _sqlite, "postgres": _postgres}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = BACKENDS[request.param](request, tmp_path)
    yield made
    made.close()


def _chunk(ordinal: int, text: str) -> NewChunk:
    vector = np.zeros(4, dtype=np.float32)
    vector[ordinal % 4] = 1.0
    return NewChunk(ordinal, text, None, None, len(text.split()), f"hash-{text}", vector.tobytes())


def _write(b: Backend, staged: StagedItem, title: str, content_hash: str, chunks: list[NewChunk]) -> ChunkChanges:
    """Write a document whose collection has only version 1 (index id = collection id)."""
    parsed = ParsedDocument((TextBlock(" ".join(c.text for c in chunks)),))
    write = DocumentWrite(title, content_hash, parsed, {staged.collection_id: chunks})
    return b.store.write_document(staged, write)[staged.collection_id]


def _ingest(b: Backend, texts: list[str], external_id: str | None = None, metadata: dict | None = None) -> str:
    item = DocumentInput(collection="c", external_id=external_id, text=" ".join(texts), metadata=metadata or {})
    job = b.jobs.create_job([item], None, None)
    (staged,) = b.jobs.claim_items(10)
    _write(b, staged, "Title", "h", [_chunk(i, t) for i, t in enumerate(texts)])
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
    changes = _write(backend, item, "Title", "h2", [_chunk(0, "one"), _chunk(1, "four")])
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
    removed = backend.store.delete_document(cats)
    assert list(removed) == [cid]
    assert len(removed[cid]) == 1
    assert backend.store.keyword_search(cid, analyze("cats"), 10, SearchFilters()) == []
    with pytest.raises(NotFoundError):
        backend.store.delete_document(cats)


def test_chunk_documents_maps_existing_chunks_to_their_documents(backend: Backend) -> None:
    first = _ingest(backend, ["one", "two"])
    second = _ingest(backend, ["three"])
    ids = {doc: [c.id for c in backend.store.get_chunks(doc)] for doc in (first, second)}
    missing = max(ids[first] + ids[second]) + 1000
    found = backend.store.chunk_documents([*ids[first], *ids[second], missing])
    assert found == {**dict.fromkeys(ids[first], first), **dict.fromkeys(ids[second], second)}
    assert backend.store.chunk_documents([]) == {}
    backend.store.delete_document(second)
    assert backend.store.chunk_documents(ids[second]) == {}


def test_term_chunk_counts_count_the_chunks_holding_each_term(backend: Backend) -> None:
    _ingest(backend, ["cats purr", "cats sleep all day"])
    _ingest(backend, ["rockets burn fuel", "sleep"])
    cid = backend.store.get_collection("c").id
    counts = backend.store.term_chunk_counts(cid, [*analyze("cats sleep rockets"), "absent"])
    assert counts == {"cat": 2, "sleep": 2, "rocket": 1}
    assert backend.store.term_chunk_counts(cid, []) == {}


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
        _write(backend, staged, "Other", f"h{i}", [_chunk(0, f"apple pie number {i}")])
    after = backend.store.keyword_search(cid, analyze("apple"), 10, SearchFilters())
    assert after == before
    other = backend.store.get_collection("other").id
    assert len(backend.store.keyword_search(other, analyze("apple"), 10, SearchFilters())) == 5


def test_index_versions_are_written_searched_and_deleted_separately(backend: Backend) -> None:
    doc = _ingest(backend, ["apple banana"], external_id="e")
    cid = backend.store.get_collection("c").id
    (v1,) = backend.versions.live_versions(cid)
    assert (v1.index_id, v1.version, v1.config, v1.state) == (cid, 1, CONFIG, IndexState.READY)
    v2 = backend.versions.create_version(cid, IndexConfig(64, 8, "test-model"), total=1)
    assert (v2.version, v2.state, v2.total) == (2, IndexState.BUILDING, 1)
    assert [v.version for v in backend.versions.live_versions(cid)] == [1, 2]

    # A write that knows only version 1 is refused: version 2 would go stale.
    backend.jobs.create_job([DocumentInput(collection="c", external_id="e", text="apple cherry")], None, None)
    (item,) = backend.jobs.claim_items(10)
    with pytest.raises(IndexVersionsChangedError):
        _write(backend, item, "T", "h2", [_chunk(0, "apple cherry")])
    parsed = ParsedDocument((TextBlock("apple cherry"),))
    chunks = {cid: [_chunk(0, "apple cherry")], v2.index_id: [_chunk(0, "apple"), _chunk(1, "cherry")]}
    changes = backend.store.write_document(item, DocumentWrite("T", "h2", parsed, chunks))
    assert (len(changes[cid].added), len(changes[v2.index_id].added)) == (1, 2)
    assert [c.text for c in backend.store.get_chunks(doc)] == ["apple cherry"]  # the active version's
    assert len(backend.store.keyword_search(v2.index_id, analyze("cherry"), 10, SearchFilters())) == 1
    assert len(backend.store.chunk_ids(v2.index_id, SearchFilters())) == 2

    (source,) = backend.store.document_sources(cid, None, 10)
    assert (source.document_id, source.content_hash, source.parsed) == (doc, "h2", parsed)
    assert backend.store.ready_document_count(cid) == 1
    stale = type(source)(source.document_id, source.title, "old-hash", source.parsed)
    assert backend.store.write_version_chunks(v2.index_id, stale, [_chunk(0, "x")]) is None
    rebuilt = backend.store.write_version_chunks(v2.index_id, source, [_chunk(0, "apple"), _chunk(1, "cherry")])
    assert rebuilt is not None
    assert (rebuilt.added, rebuilt.removed) == ((), ())  # identical chunks are kept

    removed = backend.store.delete_document(doc)
    assert (len(removed[cid]), len(removed[v2.index_id])) == (1, 2)
    assert backend.store.chunk_ids(v2.index_id, SearchFilters()) == []


def test_index_route_switches_atomically_and_guards_routed_versions(backend: Backend) -> None:
    _ingest(backend, ["one"])
    cid = backend.store.get_collection("c").id
    v2 = backend.versions.create_version(cid, CONFIG, total=1)
    backend.versions.update_version(v2.index_id, state=IndexState.READY, built=1)
    route = backend.versions.index_route(cid)
    assert (route.active.version, route.canary, route.previous) == (1, None, None)
    backend.versions.set_route(cid, cid, v2.index_id, 0.25, None)
    route = backend.versions.index_route(cid)
    assert route.canary is not None
    assert (route.canary.version, route.canary_share, route.canary.built) == (2, 0.25, 1)
    with pytest.raises(ConflictError):
        backend.versions.delete_version(v2.index_id)
    backend.versions.set_route(cid, v2.index_id, None, 0.0, cid)
    route = backend.versions.index_route(cid)
    assert route.previous is not None
    assert (route.active.version, route.canary, route.canary_share, route.previous.version) == (2, None, 0.0, 1)
    backend.versions.set_route(cid, cid, None, 0.0, None)
    backend.versions.update_version(v2.index_id, state=IndexState.FAILED, error="boom")
    assert [v.version for v in backend.versions.live_versions(cid)] == [1]
    assert backend.versions.list_versions(cid)[1].error == "boom"
    backend.versions.delete_version(v2.index_id)
    assert [v.version for v in backend.versions.list_versions(cid)] == [1]


def test_golden_set_round_trip(backend: Backend) -> None:
    cid = backend.store.ensure_collection("g").id
    assert backend.versions.get_golden_set(cid) is None
    golden = {"queries": {"q1": "what"}, "qrels": {"q1": {"d1": 1}}}
    backend.versions.set_golden_set(cid, golden)
    backend.versions.set_golden_set(cid, golden)
    assert backend.versions.get_golden_set(cid) == golden


def test_document_fingerprints_list_a_sources_documents_with_their_hashes(backend: Backend) -> None:
    """What source sync compares files with: external id, stored hash (None while pending), by metadata."""
    b_doc = _ingest(backend, ["beta"], external_id="b.md", metadata={"sync_source": "s1"})
    a_doc = _ingest(backend, ["alpha"], external_id="a.md", metadata={"sync_source": "s1"})
    _ingest(backend, ["gamma"], external_id="g.md", metadata={"sync_source": "s2"})
    _ingest(backend, ["no external id"], metadata={"sync_source": "s1"})
    _ingest(backend, ["by hand"], external_id="manual")
    pending = DocumentInput(collection="c", external_id="p.md", text="x", metadata={"sync_source": "s1"})
    (pending_doc,) = backend.jobs.create_job([pending], None, None).document_ids
    cid = backend.store.get_collection("c").id

    owned = backend.store.document_fingerprints(cid, SearchFilters.from_mapping({"sync_source": "s1"}))
    assert owned == [
        DocumentFingerprint(a_doc, "a.md", "h"),
        DocumentFingerprint(b_doc, "b.md", "h"),
        DocumentFingerprint(pending_doc, "p.md", None),
    ]
    every = backend.store.document_fingerprints(cid, SearchFilters())
    assert [f.external_id for f in every] == ["a.md", "b.md", "g.md", "manual", "p.md"]
    other = backend.store.ensure_collection("other").id
    assert backend.store.document_fingerprints(other, SearchFilters()) == []


def test_a_claim_stops_at_its_byte_budget_but_takes_at_least_one_item(backend: Backend) -> None:
    rng = random.Random(5)
    inputs = [DocumentInput(collection="c", text="".join(rng.choices(string.ascii_letters, k=2000))) for _ in range(4)]
    sizes = [len(encode_input(item)) for item in inputs]  # what each backend stages
    backend.jobs.create_job(inputs, None, None)
    (first,) = backend.jobs.claim_items(10, max_bytes=1)  # over the budget alone: taken all the same
    assert first.input.text == inputs[0].text
    # An item is taken while the payloads taken before it sum under the budget.
    taken = backend.jobs.claim_items(10, max_bytes=sizes[1] + 1)
    assert [item.input.text for item in taken] == [inputs[1].text, inputs[2].text]
    assert [item.input.text for item in backend.jobs.claim_items(10)] == [inputs[3].text]
