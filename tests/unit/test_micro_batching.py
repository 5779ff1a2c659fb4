"""MicroBatcher: which calls share a model run, in what order, and who gets which rows and errors."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from ragserve.api.app import create_app
from ragserve.embedding.batching import MicroBatcher
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.embedding.protocol import Embedder, EmbedKind, Vectors
from ragserve.errors import EmbeddingError
from ragserve.settings import Settings
from tests.integration.helpers import ingest

WAIT_SECONDS = 10.0


class RecordingEmbedder:
    """A fake model: a fixed vector per text, every batch recorded; ``hold(kind)`` makes runs of that kind wait
    for ``release(kind)``, and a batch holding a text of ``poison`` raises."""

    model_id = "recording"
    dimension = 8

    def __init__(self) -> None:
        self.batches: list[tuple[EmbedKind, list[str]]] = []
        self.poison: set[str] = set()
        self._gates: dict[EmbedKind, threading.Event] = {"query": threading.Event(), "document": threading.Event()}
        self.release("query", "document")

    def hold(self, *kinds: EmbedKind) -> None:
        for kind in kinds:
            self._gates[kind].clear()

    def release(self, *kinds: EmbedKind) -> None:
        for kind in kinds:
            self._gates[kind].set()

    def embed(self, texts: Sequence[str], kind: EmbedKind = "document") -> Vectors:
        self.batches.append((kind, list(texts)))
        assert self._gates[kind].wait(WAIT_SECONDS), "the test never released the model"
        if self.poison & set(texts):
            raise EmbeddingError("the model failed")
        return np.stack([vector_of(text) for text in texts]) if texts else np.zeros((0, 8), np.float32)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(text.split()) for text in texts]


def vector_of(text: str) -> Vectors:
    vector = np.random.default_rng(zlib.crc32(text.encode())).standard_normal(8).astype(np.float32)
    normalised: Vectors = vector / np.linalg.norm(vector)
    return normalised


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


@pytest.fixture
def inner() -> RecordingEmbedder:
    return RecordingEmbedder()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=16) as executor:
        yield executor


@pytest.fixture
def batcher(inner: RecordingEmbedder) -> Iterator[MicroBatcher]:
    batcher = MicroBatcher(inner, window_ms=5, max_batch=64, max_document_batch=2)
    yield batcher
    inner.release("query", "document")
    batcher.close()


def start_busy(
    batcher: MicroBatcher, inner: RecordingEmbedder, pool: ThreadPoolExecutor, kind: EmbedKind
) -> Future[Vectors]:
    """Occupy the batching thread of ``kind`` with a batch that runs until ``inner.release(kind)``."""
    inner.hold(kind)
    busy = pool.submit(batcher.embed, [f"busy {kind}"], kind)
    wait_until(lambda: (kind, [f"busy {kind}"]) in inner.batches)
    return busy


def test_the_batcher_is_an_embedder(batcher: MicroBatcher, inner: RecordingEmbedder) -> None:
    assert isinstance(batcher, Embedder)
    assert (batcher.model_id, batcher.dimension) == (inner.model_id, inner.dimension)
    assert batcher.count_tokens(["a b", "c"]) == [2, 1]
    assert batcher.embed([], kind="query").shape == (0, 8)


def test_concurrent_queries_share_one_model_run(
    batcher: MicroBatcher, inner: RecordingEmbedder, pool: ThreadPoolExecutor
) -> None:
    busy = start_busy(batcher, inner, pool, "query")
    queries = [f"query {n}" for n in range(6)]
    calls = [pool.submit(batcher.embed, [query], "query") for query in queries]
    wait_until(lambda: batcher.queued_texts == len(queries))
    inner.release("query")

    for query, call in zip(queries, calls, strict=True):
        np.testing.assert_array_equal(call.result(WAIT_SECONDS), vector_of(query)[None, :])
    busy.result(WAIT_SECONDS)
    assert len(inner.batches) == 2
    kind, texts = inner.batches[1]
    assert kind == "query"
    assert sorted(texts) == queries


def test_a_query_does_not_wait_for_documents_running_or_queued(
    batcher: MicroBatcher, inner: RecordingEmbedder, pool: ThreadPoolExecutor
) -> None:
    busy = start_busy(batcher, inner, pool, "document")
    documents = [f"document {n}" for n in range(6)]
    bulk = pool.submit(batcher.embed, documents, "document")
    wait_until(lambda: batcher.queued_texts == 6)

    np.testing.assert_array_equal(batcher.embed(["late query"], kind="query"), vector_of("late query")[None, :])
    assert not busy.done()
    inner.release("document")
    np.testing.assert_array_equal(bulk.result(WAIT_SECONDS), np.stack([vector_of(d) for d in documents]))
    busy.result(WAIT_SECONDS)
    # The document call was cut into batches of max_document_batch, between which queries may go first.
    assert inner.batches == [
        ("document", ["busy document"]),
        ("query", ["late query"]),
        ("document", documents[0:2]),
        ("document", documents[2:4]),
        ("document", documents[4:6]),
    ]


def test_no_document_batch_starts_while_a_query_is_queued(
    batcher: MicroBatcher, inner: RecordingEmbedder, pool: ThreadPoolExecutor
) -> None:
    busy_query = start_busy(batcher, inner, pool, "query")
    busy_document = start_busy(batcher, inner, pool, "document")
    bulk = pool.submit(batcher.embed, ["document 0", "document 1"], "document")
    wait_until(lambda: batcher.queued_texts == 2)
    query = pool.submit(batcher.embed, ["queued query"], "query")
    wait_until(lambda: batcher.queued_texts == 3)

    inner.release("document")
    busy_document.result(WAIT_SECONDS)
    time.sleep(0.05)  # the document thread is free now, yet must not take the documents
    assert batcher.queued_texts == 3
    inner.release("query")
    for call in (busy_query, query, bulk):
        call.result(WAIT_SECONDS)
    assert inner.batches.index(("query", ["queued query"])) < inner.batches.index(
        ("document", ["document 0", "document 1"])
    )


def test_each_caller_gets_its_own_rows(batcher: MicroBatcher, inner: RecordingEmbedder) -> None:
    def call(n: int) -> tuple[list[str], Vectors]:
        texts = [f"caller {n} text {i}" for i in range(1 + n % 7)]
        return texts, batcher.embed(texts, kind="query" if n % 3 == 0 else "document")

    with ThreadPoolExecutor(max_workers=12) as executor:
        results = list(executor.map(call, range(48)))

    for texts, vectors in results:
        np.testing.assert_array_equal(vectors, inner.embed(texts))
    assert max(len(texts) for _, texts in inner.batches) > 1  # calls were merged, not run one by one


def test_a_failing_batch_fails_only_its_callers(
    batcher: MicroBatcher, inner: RecordingEmbedder, pool: ThreadPoolExecutor
) -> None:
    inner.poison = {"poison"}
    busy = start_busy(batcher, inner, pool, "query")
    poisoned = pool.submit(batcher.embed, ["poison"], "query")
    neighbour = pool.submit(batcher.embed, ["innocent"], "query")
    wait_until(lambda: batcher.queued_texts == 2)
    documents = pool.submit(batcher.embed, ["later document"], "document")
    wait_until(lambda: batcher.queued_texts == 3)
    inner.release("query")

    for failed in (poisoned, neighbour):
        with pytest.raises(EmbeddingError, match="the model failed"):
            failed.result(WAIT_SECONDS)
    np.testing.assert_array_equal(documents.result(WAIT_SECONDS), vector_of("later document")[None, :])
    busy.result(WAIT_SECONDS)
    np.testing.assert_array_equal(batcher.embed(["after"], kind="query"), vector_of("after")[None, :])


def test_a_failure_drops_the_rest_of_a_split_call(
    batcher: MicroBatcher, inner: RecordingEmbedder, pool: ThreadPoolExecutor
) -> None:
    inner.poison = {"d0"}
    busy = start_busy(batcher, inner, pool, "document")
    bulk = pool.submit(batcher.embed, ["d0", "d1", "d2", "d3", "d4", "d5"], "document")
    wait_until(lambda: batcher.queued_texts == 6)
    inner.release("document")

    with pytest.raises(EmbeddingError):
        bulk.result(WAIT_SECONDS)
    busy.result(WAIT_SECONDS)
    batcher.embed(["after"], kind="query")
    # The call's other two batches were dropped, not embedded for a caller who already has its error.
    assert inner.batches == [("document", ["busy document"]), ("document", ["d0", "d1"]), ("query", ["after"])]


def test_close_fails_queued_calls_and_later_ones(
    batcher: MicroBatcher, inner: RecordingEmbedder, pool: ThreadPoolExecutor
) -> None:
    busy = start_busy(batcher, inner, pool, "query")
    queued = pool.submit(batcher.embed, ["never run"], "query")
    wait_until(lambda: batcher.queued_texts == 1)
    closing = pool.submit(batcher.close)

    with pytest.raises(EmbeddingError, match="closed"):
        queued.result(WAIT_SECONDS)
    assert not closing.done()  # it waits for the batch being run ...
    inner.release("query")
    closing.result(WAIT_SECONDS)
    np.testing.assert_array_equal(busy.result(WAIT_SECONDS), vector_of("busy query")[None, :])  # ... to complete
    with pytest.raises(EmbeddingError, match="closed"):
        batcher.embed(["too late"], kind="query")
    assert inner.batches == [("query", ["busy query"])]
    batcher.close()  # idempotent


def test_settings_out_of_range_are_rejected(inner: RecordingEmbedder) -> None:
    with pytest.raises(ValueError, match="window_ms"):
        MicroBatcher(inner, window_ms=51)
    with pytest.raises(ValueError, match="max_document_batch"):
        MicroBatcher(inner, max_batch=4, max_document_batch=8)
    with pytest.raises(ValueError, match=r"embedding\.max_document_batch"):
        Settings(embedding={"max_batch": 4, "max_document_batch": 8})  # type: ignore[arg-type]


def test_batched_vectors_equal_the_models_own(embedder: OnnxEmbedder) -> None:
    words = ["statins", "lower", "the", "risk", "of", "myocardial", "infarction", "in", "patients", "with", "fats"]
    calls = [
        ([" ".join(words[: 1 + n % len(words)]) * (1 + n % 5)], "query" if n % 2 else "document") for n in range(24)
    ]
    calls += [([" ".join(words) * k for k in (1, 3, 9, 30)], "document")]  # 30 repetitions: truncated
    batcher = MicroBatcher(embedder, window_ms=20, max_batch=8, max_document_batch=2)
    try:
        with ThreadPoolExecutor(max_workers=8) as executor:
            batched = list(executor.map(lambda call: batcher.embed(*call), calls))
    finally:
        batcher.close()

    for (texts, kind), vectors in zip(calls, batched, strict=True):
        direct = embedder.embed(texts, kind=kind)  # type: ignore[arg-type]
        assert vectors.shape == direct.shape
        assert (vectors * direct).sum(axis=1).min() >= 0.9999


def test_the_service_wraps_a_shared_embedder_and_closes_only_the_wrapper(
    make_settings: Callable[..., Settings], embedder: OnnxEmbedder, model_cache: Path
) -> None:
    settings = make_settings(embedding={"cache_dir": model_cache, "micro_batching": True, "max_document_batch": 2})
    with TestClient(create_app(settings, embedder)) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        assert isinstance(service.embedder, MicroBatcher)
        assert service.embedder.inner is embedder
        job = ingest(client, [{"external_id": "a", "text": "Statins lower the risk of heart attacks. " * 20}])
        assert job["status"] == "succeeded", job["errors"]
        response = client.post("/v1/search", json={"query": "do statins prevent heart attacks?", "mode": "dense"})
        assert response.status_code == 200
        assert response.json()["results"][0]["external_id"] == "a"
        batcher = service.embedder

    with pytest.raises(EmbeddingError, match="closed"):
        batcher.embed(["after close"], kind="query")
    assert embedder.embed(["after close"], kind="query").shape == (1, embedder.dimension)
