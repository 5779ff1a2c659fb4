"""The in-memory BM25 accelerator of the SQLite store ranks exactly as FTS5 does, and never answers from a
stale copy: a real store is built from the SciFact slice and every accelerated answer is compared with FTS5's."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from ragserve.domain import DocumentInput, IndexConfig, NewChunk, ParsedDocument, SearchFilters, TextBlock
from ragserve.stores.analyzer import analyze
from ragserve.stores.keyword_accelerator import KeywordAccelerator
from ragserve.stores.protocol import DocumentWrite
from ragserve.stores.sparse_bm25 import Bm25Snapshot, _best_rows
from ragserve.stores.sqlite import SqliteStore
from ragserve.stores.sqlite_db import SqliteDatabase
from ragserve.stores.sqlite_jobs import SqliteJobStore
from ragserve.stores.sqlite_versions import SqliteIndexVersions

CONFIG = IndexConfig(max_tokens=200, overlap_tokens=40, model="test-model")
SLICE = Path(__file__).parents[1] / "fixtures" / "scifact_slice"
NOTHING = SearchFilters()
FULLWIDTH = "\uff46\uff55\uff4c\uff4c"  # "full" in full-width letters
MICRO_LITRE = "\u00b5l"  # the slice's "\u00b5l": FTS5 folds the micro sign to Greek mu, Python keeps it


class Corpus:
    def __init__(self, db: SqliteDatabase, accelerator: KeywordAccelerator) -> None:
        self.db, self.accelerator = db, accelerator
        self.fast = SqliteStore(db, CONFIG, accelerator=accelerator)
        self.jobs = SqliteJobStore(db, CONFIG)
        self.collection_id = ""

    def store(self, title_weight: float, accelerated: bool) -> SqliteStore:
        return SqliteStore(self.db, CONFIG, title_weight, self.accelerator if accelerated else None)

    def ingest(self, docs: list[dict[str, str]]) -> list[str]:
        job = self.jobs.create_job([DocumentInput(collection="c", text=d["text"]) for d in docs], None, None)
        for item, doc in zip(self.jobs.claim_items(len(docs)), docs, strict=True):
            sentences = [s for s in doc["text"].split(". ") if s]
            texts = [". ".join(sentences[i : i + 3]) for i in range(0, len(sentences), 3)] or [doc["text"]]
            vector = np.ones(4, dtype=np.float32).tobytes()
            chunks = [NewChunk(i, t, None, None, len(t.split()), f"h{i}-{t[:20]}", vector) for i, t in enumerate(texts)]
            parsed = ParsedDocument((TextBlock(doc["text"]),))
            write = DocumentWrite(doc.get("title"), "h", parsed, {item.collection_id: chunks})
            self.fast.write_document(item, write)
            self.collection_id = item.collection_id
        return job.document_ids

    def snapshot(self, timeout_seconds: float = 20.0) -> Bm25Snapshot:
        """The accelerator's current snapshot, once its rebuild has run."""
        deadline = time.monotonic() + timeout_seconds
        while (found := self.accelerator.current(self.collection_id)) is None:
            assert time.monotonic() < deadline, "the accelerator did not catch up"
            time.sleep(0.02)
        return found


@pytest.fixture
def corpus(tmp_path: Path) -> Iterator[Corpus]:
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    accelerator = KeywordAccelerator(db, max_chunks=100_000, quiet_seconds=0.05, max_stale_seconds=0.5)
    made = Corpus(db, accelerator)
    docs = [json.loads(line) for line in (SLICE / "corpus.jsonl").read_text().splitlines()]
    docs.append({"title": "Naïve café studies", "text": f"Naïve patients drank café au lait. {FULLWIDTH}width too."})
    made.ingest(docs[:100])
    made.ingest(docs[100:])
    yield made
    accelerator.close()
    db.close()


def _queries(corpus: Corpus) -> list[list[str]]:
    lines = (SLICE / "queries.jsonl").read_text().splitlines()
    queries = [analyze(json.loads(line)["text"]) for line in lines]
    frequent = [t for t, _ in Counter(t for q in queries for t in q).most_common(40)]
    queries += [[t] for t in frequent] + [frequent[i : i + 20] for i in range(0, 40, 5)]
    return [*queries, ["naïv", "café"], ["zzznotaterm"], ["studi", "zzznotaterm"]]


def _assert_same_ranking(fast: list[tuple[int, float]], exact: list[tuple[int, float]]) -> None:
    """Same length, same scores (to 1e-9 relative) in order, same ids except that ids tied on a score may
    differ at the cut-off (which of several tied rows is the k-th is FTS5's choice too)."""
    assert len(fast) == len(exact)
    np.testing.assert_allclose([s for _, s in fast], [s for _, s in exact], rtol=1e-9)
    last = exact[-1][1] if exact else 0.0
    tied_at_cut = {cid for cid, s in exact if abs(s - last) <= 1e-9 * abs(last)}
    assert [c for c, _ in fast if c not in tied_at_cut] == [c for c, _ in exact if c not in tied_at_cut]


@pytest.mark.parametrize("title_weight", [1.0, 2.5])
def test_accelerated_keyword_search_equals_fts5(corpus: Corpus, title_weight: float) -> None:
    snapshot = corpus.snapshot()
    fts5 = corpus.store(title_weight, accelerated=False)
    fast = corpus.store(title_weight, accelerated=True)
    answered = 0
    for terms in _queries(corpus):
        for k in (1, 10, 1000):
            exact = fts5.keyword_search(corpus.collection_id, terms, k, NOTHING)
            found = snapshot.search(terms, k, title_weight)
            assert found is not None, terms
            _assert_same_ranking(found, exact)
            _assert_same_ranking(fast.keyword_search(corpus.collection_id, terms, k, NOTHING), exact)
            answered += bool(exact)
    assert answered > 150


@pytest.mark.parametrize("seed", range(20))
def test_the_best_rows_of_the_postings_hold_every_row_of_the_top_k_ties_included(seed: int) -> None:
    """The selection works on the postings (a row once per query term), not on every row's score: with many
    tied scores and rows repeated across terms it must still keep every row that scores at least the k-th."""
    rng = np.random.default_rng(seed)
    rows, terms = int(rng.integers(5, 400)), int(rng.integers(1, 6))
    postings = np.concatenate([rng.choice(rows, int(rng.integers(1, rows + 1)), replace=False) for _ in range(terms)])
    scores = np.zeros(rows)
    scores[np.unique(postings)] = rng.integers(1, 6, size=np.unique(postings).shape[0]) / 4  # few values: ties
    for k in (1, 3, 10, 50):
        kept = _best_rows(postings.astype(np.int32), scores, k * terms)
        distinct = np.unique(postings)
        kth = np.sort(scores[distinct])[::-1][min(k, distinct.shape[0]) - 1]
        assert set(distinct[scores[distinct] >= kth]) <= set(kept.tolist())
        assert set(kept.tolist()) <= set(distinct.tolist())


def test_term_chunk_counts_equal_fts5s(corpus: Corpus) -> None:
    snapshot = corpus.snapshot()
    fts5 = corpus.store(1.0, accelerated=False)
    for terms in _queries(corpus):
        assert snapshot.chunk_counts(terms) == fts5.term_chunk_counts(corpus.collection_id, terms)
        assert corpus.fast.term_chunk_counts(corpus.collection_id, terms) == snapshot.chunk_counts(terms)


def test_an_unknown_non_ascii_term_is_left_to_fts5(corpus: Corpus) -> None:
    snapshot = corpus.snapshot()
    assert snapshot.search([FULLWIDTH], 10, 1.0) is None  # FTS5 might split it; only FTS5 can say
    assert snapshot.search([f"{FULLWIDTH}width"], 10, 1.0) is not None  # seen and checked against FTS5's counts


def test_a_term_fts5_tokenizes_differently_is_left_to_fts5(corpus: Corpus) -> None:
    snapshot = corpus.snapshot()
    assert MICRO_LITRE in snapshot.unsafe
    assert snapshot.search([MICRO_LITRE, "cell"], 10, 1.0) is None
    assert snapshot.chunk_counts([MICRO_LITRE]) is None
    fts5 = corpus.store(1.0, accelerated=False)
    exact = fts5.keyword_search(corpus.collection_id, [MICRO_LITRE, "cell"], 10, NOTHING)
    assert corpus.fast.keyword_search(corpus.collection_id, [MICRO_LITRE, "cell"], 10, NOTHING) == exact


def test_writes_fall_back_to_fts5_until_the_copy_is_rebuilt(corpus: Corpus) -> None:
    before = corpus.snapshot()
    fts5 = corpus.store(1.0, accelerated=False)
    terms = analyze("quokka marsupial statin therapy")
    (added,) = corpus.ingest([{"title": "Quokka", "text": "The quokka is a marsupial. Statin therapy for quokkas."}])
    assert corpus.accelerator.current(corpus.collection_id) is None  # stale at once: FTS5 answers
    exact = fts5.keyword_search(corpus.collection_id, terms, 10, NOTHING)
    assert corpus.fast.keyword_search(corpus.collection_id, terms, 10, NOTHING) == exact
    after = corpus.snapshot()
    assert after is not before
    assert after.row_count > before.row_count
    _assert_same_ranking(corpus.fast.keyword_search(corpus.collection_id, terms, 10, NOTHING), exact)
    new_chunks = {cid for cid, _ in exact} - {int(r) for r in before.rowids}
    assert new_chunks  # the new document's chunks rank, from the rebuilt copy too

    corpus.fast.delete_document(added)
    assert corpus.accelerator.current(corpus.collection_id) is None
    gone = fts5.keyword_search(corpus.collection_id, terms, 10, NOTHING)
    assert not new_chunks & {cid for cid, _ in gone}
    assert corpus.fast.keyword_search(corpus.collection_id, terms, 10, NOTHING) == gone
    _assert_same_ranking(corpus.snapshot().search(terms, 10, 1.0) or [], gone)


def test_a_new_index_version_is_tracked_separately(corpus: Corpus) -> None:
    corpus.snapshot()
    versions = SqliteIndexVersions(corpus.db)
    version = versions.create_version(corpus.collection_id, CONFIG, 0)
    assert corpus.accelerator.current(corpus.collection_id) is not None  # another table changed
    versions.delete_version(version.index_id)
    assert corpus.accelerator.current(version.index_id) is None


def test_the_copy_of_a_deleted_index_version_is_freed_by_the_next_rebuild(corpus: Corpus) -> None:
    corpus.snapshot()
    versions = SqliteIndexVersions(corpus.db)
    version = versions.create_version(corpus.collection_id, CONFIG, 0)
    deadline = time.monotonic() + 20
    while corpus.accelerator.current(version.index_id) is None:  # its (empty) copy is built
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert version.index_id in corpus.accelerator.held
    versions.delete_version(version.index_id)
    corpus.ingest([{"title": "Later", "text": "A later study of statins."}])  # the next rebuild frees it
    corpus.snapshot()
    assert corpus.accelerator.held == {corpus.collection_id}


def test_an_index_over_the_bound_stays_on_fts5(corpus: Corpus) -> None:
    small = KeywordAccelerator(corpus.db, max_chunks=10, quiet_seconds=0.0)
    try:
        assert small.current(corpus.collection_id) is None
        time.sleep(0.5)
        assert small.current(corpus.collection_id) is None
        store = SqliteStore(corpus.db, CONFIG, accelerator=small)
        assert store.keyword_search(corpus.collection_id, ["cell"], 5, NOTHING)
    finally:
        small.close()


def _rebuilds() -> float:
    return REGISTRY.get_sample_value("ragserve_store_keyword_rebuild_seconds_count") or 0.0


def test_a_burst_of_writes_is_rebuilt_once_when_writes_pause(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    accelerator = KeywordAccelerator(db, max_chunks=1000, quiet_seconds=1.0, max_stale_seconds=60.0)
    burst = Corpus(db, accelerator)
    try:
        burst.ingest([{"title": "First", "text": "Statins lower cholesterol."}])
        burst.snapshot()
        before = _rebuilds()
        for i in range(10):  # a bulk load: searches meanwhile are answered by FTS5
            burst.ingest([{"title": f"Doc {i}", "text": f"Statin trial number {i} lowered cholesterol."}])
            assert burst.fast.keyword_search(burst.collection_id, ["statin"], 20, NOTHING)
            time.sleep(0.05)
        assert _rebuilds() == before
        assert burst.snapshot().row_count == 11
        assert _rebuilds() == before + 1
    finally:
        accelerator.close()
        db.close()
