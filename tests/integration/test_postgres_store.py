"""What the PostgreSQL backend promises beyond the store contracts: migrations run once when replicas start
together, searches read from replicas, filtered dense search pre-filters, and the f16 and binary indexes find
what f32 finds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

import ragserve.stores.migrations.versions
from ragserve.domain import DocumentInput, IndexConfig, NewChunk, ParsedDocument, SearchFilters, TextBlock
from ragserve.evaluation import read_corpus, read_queries
from ragserve.settings import VectorIndexSettings
from ragserve.stores.analyzer import analyze
from ragserve.stores.pgvector import PgVectorIndex
from ragserve.stores.postgres import PostgresStore
from ragserve.stores.postgres_db import PostgresDatabase, Precision, VectorIndexSpec, migrate
from ragserve.stores.postgres_jobs import PostgresJobStore
from ragserve.stores.protocol import DocumentWrite
from ragserve.stores.sqlite import SqliteStore
from ragserve.stores.sqlite_db import SqliteDatabase
from ragserve.stores.sqlite_jobs import SqliteJobStore
from tests.conftest import FIXTURES
from tests.postgres import TestPostgres

CONFIG = IndexConfig(max_tokens=200, overlap_tokens=40, model="test-model")
DIM = 16


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _fill(db: PostgresDatabase, vectors: np.ndarray, chunks_per_document: int) -> str:
    """Documents of ``chunks_per_document`` chunks each (document i has metadata ``bucket = i``); returns the
    collection id. Chunk ids follow the rows of ``vectors``."""
    store, jobs = PostgresStore(db, CONFIG), PostgresJobStore(db, CONFIG)
    documents = len(vectors) // chunks_per_document
    inputs = [DocumentInput(collection="c", text=f"d{i}", metadata={"bucket": i}) for i in range(documents)]
    jobs.create_job(inputs, None, None)
    staged = sorted(jobs.claim_items(documents), key=lambda item: item.seq)
    for item in staged:
        rows = range(item.seq * chunks_per_document, (item.seq + 1) * chunks_per_document)
        chunks = [NewChunk(i, f"chunk {i}", None, None, 2, f"h{i}", vectors[i].tobytes()) for i in rows]
        write = DocumentWrite(None, f"doc{item.seq}", ParsedDocument((TextBlock("x"),)), {item.collection_id: chunks})
        store.write_document(item, write)
    return store.get_collection("c").id


@pytest.fixture
def database(postgres_url: str) -> Iterator[PostgresDatabase]:
    migrate(postgres_url, VectorIndexSpec(DIM))
    db = PostgresDatabase(postgres_url, min_size=1, max_size=1)
    yield db
    db.close()


def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_store() -> None:
        start.wait()
        try:
            migrate(postgres_url, VectorIndexSpec(DIM))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Without the advisory lock the second CREATE TABLE of the same schema fails.
    assert errors == []
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(_head_revision(),)]


def _head_revision() -> str:
    """The newest migration's revision, read from the migration files themselves."""
    versions = Path(ragserve.stores.migrations.versions.__file__).parent
    return max(p.name.split("_")[0].lstrip("v") for p in versions.glob("v[0-9]*_*.py"))


def test_a_database_of_another_dimension_is_refused(postgres_url: str) -> None:
    migrate(postgres_url, VectorIndexSpec(DIM))
    with pytest.raises(Exception, match="16-dimension vectors but the embedding model makes 8"):
        migrate(postgres_url, VectorIndexSpec(8))


def test_searches_read_from_the_replica_and_documents_from_the_primary(
    postgres_server: TestPostgres, postgres_url: str
) -> None:
    migrate(postgres_url, VectorIndexSpec(DIM))
    replica_url = postgres_url + " application_name=ragserve-test-replica"
    db = PostgresDatabase(postgres_url, [replica_url], min_size=1, max_size=2)
    try:
        vectors = _unit(np.random.default_rng(1), 20)
        collection_id = _fill(db, vectors, 2)
        store = PostgresStore(db, CONFIG)
        index = PgVectorIndex(db, VectorIndexSpec(DIM), VectorIndexSettings())
        primary, (replica,) = db.primary_pool, db.replica_pools
        before = primary.get_stats().get("requests_num", 0), replica.get_stats().get("requests_num", 0)
        hits = store.keyword_search(collection_id, analyze("chunk 3"), 5, SearchFilters())
        dense = index.search(collection_id, vectors[3], 5)
        filtered = index.search_filtered(collection_id, vectors[3], 5, SearchFilters.from_mapping({"bucket": 1}), store)
        store.hits(dense)
        store.chunk_ids(collection_id, SearchFilters())
        after = primary.get_stats().get("requests_num", 0), replica.get_stats().get("requests_num", 0)
        assert hits
        assert dense[0][1] == pytest.approx(1.0)
        assert len(filtered) == 2  # bucket 1 is one document of two chunks
        assert filtered[0][0] == dense[0][0]
        assert after[0] == before[0]  # nothing on the primary
        assert after[1] - before[1] == 5
        with db.replica() as conn:
            assert conn.execute("SELECT current_setting('application_name')").fetchone() == ("ragserve-test-replica",)
        document_id = store.hits(dense)[0].document_id
        store.get_document(document_id)
        assert primary.get_stats().get("requests_num", 0) == after[0] + 1
    finally:
        db.close()


def _exact_top(vectors: np.ndarray, allowed: list[int], ids: list[int], query: np.ndarray, k: int) -> list[int]:
    scores = vectors[allowed] @ query
    return [ids[allowed[i]] for i in np.argsort(-scores)[:k]]


@pytest.mark.parametrize("path", ["exact", "hnsw", "hnsw-forced"])
def test_filtered_dense_search_finds_every_nearest_chunk_when_one_percent_pass(
    postgres_server: TestPostgres, postgres_url: str, path: str
) -> None:
    if path == "hnsw-forced":
        # No sort and no bitmap scan: the planner must walk the HNSW index, filtering as it goes.
        name = psycopg.conninfo.conninfo_to_dict(postgres_url)["dbname"]
        with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
            for setting in ("enable_sort", "enable_bitmapscan", "enable_seqscan"):
                conn.execute(f'ALTER DATABASE "{name}" SET {setting} = off')
    migrate(postgres_url, VectorIndexSpec(DIM))
    db = PostgresDatabase(postgres_url, min_size=1, max_size=1)
    try:
        rng = np.random.default_rng(7)
        vectors = _unit(rng, 3000)
        collection_id = _fill(db, vectors, 30)  # 100 documents: a bucket holds 1 % of the chunks
        store = PostgresStore(db, CONFIG)
        ids = sorted(store.chunk_ids(collection_id, SearchFilters()))
        settings = VectorIndexSettings(exact_search_max=20_000 if path == "exact" else 0, ef_search=40)
        index = PgVectorIndex(db, VectorIndexSpec(DIM), settings)
        scans_before = _index_scans(db)
        recalls = []
        for bucket in (3, 42, 77):
            allowed = list(range(bucket * 30, bucket * 30 + 30))
            filters = SearchFilters.from_mapping({"bucket": bucket})
            for query in _unit(rng, 5):
                found = [cid for cid, _ in index.search_filtered(collection_id, query, 10, filters, store)]
                expected = _exact_top(vectors, allowed, ids, query, 10)
                # Filtering the walk's top hits afterwards would leave about one hit of ten here.
                assert len(found) == 10
                assert set(found) <= {ids[i] for i in allowed}
                recalls.append(len(set(found) & set(expected)) / 10)
                if path != "hnsw-forced":
                    assert found == expected
        if path == "hnsw-forced":
            # An HNSW walk is approximate; iterative scanning keeps it going until ten chunks pass the filter.
            assert _index_scans(db) >= scans_before + 15
            assert sum(recalls) / len(recalls) >= 0.95
        elif path == "exact":
            assert _index_scans(db) == scans_before
    finally:
        db.close()


def _index_scans(db: PostgresDatabase) -> int:
    """Scans of the f32 HNSW index so far, as this connection's statistics show them."""
    with db.primary() as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute(
            "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'chunks_vector_f32'"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("precision", ["f16", "binary"])
def test_reduced_precision_indexes_find_the_same_top_hits_as_f32(postgres_url: str, precision: Precision) -> None:
    dim = 128  # binary quantisation keeps one bit per dimension: too few bits and every distance ties
    migrate(postgres_url, VectorIndexSpec(dim, precision))
    db = PostgresDatabase(postgres_url, min_size=1, max_size=2)
    try:
        rng = np.random.default_rng(11)
        # Like embeddings, the vectors form topics (30 of 10), and queries are near what they look for.
        topics = _unit(rng, 30, dim)
        vectors = np.repeat(topics, 10, axis=0) + 0.08 * rng.standard_normal((300, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        collection_id = _fill(db, vectors, 1)
        settings = VectorIndexSettings(exact_search_max=0)
        full = PgVectorIndex(db, VectorIndexSpec(dim, "f32"), settings)
        reduced = PgVectorIndex(db, VectorIndexSpec(dim, precision), settings)
        queries = vectors[rng.choice(300, 20)] + 0.08 * rng.standard_normal((20, dim)).astype(np.float32)
        for query in queries / np.linalg.norm(queries, axis=1, keepdims=True):
            expected = full.search(collection_id, query, 5)
            got = reduced.search(collection_id, query, 5)
            assert [cid for cid, _ in got] == [cid for cid, _ in expected]
            # Scores are full-precision inner products at every precision.
            assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-6)
    finally:
        db.close()


def test_bm25_scores_are_those_of_sqlite_fts5_on_the_scifact_slice(postgres_url: str, tmp_path: Path) -> None:
    """Same analysed terms, same formula: every matching chunk gets the score FTS5's ``bm25()`` gives it,
    with a title weight of 2 (FTS5's column weight)."""
    corpus = list(read_corpus(FIXTURES / "scifact_slice"))
    inputs = [DocumentInput(collection="c", external_id=d.id, text=d.text) for d in corpus]
    titles = {d.id: d.title for d in corpus}
    migrate(postgres_url, VectorIndexSpec(DIM))
    pg = PostgresDatabase(postgres_url)
    lite = SqliteDatabase(tmp_path / "db.sqlite3")
    try:
        backends = [
            (PostgresStore(pg, CONFIG, title_weight=2.0), PostgresJobStore(pg, CONFIG)),
            (SqliteStore(lite, CONFIG, title_weight=2.0), SqliteJobStore(lite, CONFIG)),
        ]
        vector = np.eye(DIM, dtype=np.float32)[0].tobytes()
        for store, jobs in backends:
            jobs.create_job(inputs, None, None)
            for item in jobs.claim_items(len(inputs)):
                text = item.input.text or ""
                # Two chunks a document: the body's halves, so that lengths and frequencies vary.
                halves = [text[: len(text) // 2], text[len(text) // 2 :]]
                chunks = [NewChunk(i, half, None, None, 1, f"h{i}", vector) for i, half in enumerate(halves)]
                title = titles[str(item.input.external_id)]
                parsed = ParsedDocument((TextBlock(text),))
                store.write_document(item, DocumentWrite(title, "h", parsed, {item.collection_id: chunks}))
        queries, _ = read_queries(FIXTURES / "scifact_slice", "test")
        compared = 0
        for text in queries.values():
            ranked = []
            for store, _ in backends:
                scored = store.keyword_search(store.get_collection("c").id, analyze(text), 1000, SearchFilters())
                texts = {hit.chunk_id: (hit.external_id, hit.text) for hit in store.hits(scored)}
                ranked.append({texts[cid]: score for cid, score in scored})
            assert ranked[0].keys() == ranked[1].keys()
            for key, score in ranked[1].items():
                assert ranked[0][key] == pytest.approx(score, rel=1e-9), key
            compared += len(ranked[0])
        assert compared > 1000
    finally:
        pg.close()
        lite.close()
