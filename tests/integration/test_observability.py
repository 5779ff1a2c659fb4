"""Operations through the HTTP API: spans of an answer and of ingestion (in-memory exporter), every metric on
/metrics after an ingest, a search and answers, load shedding and dependency checks on /ready."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from ragserve.api.app import create_app
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.settings import Settings
from tests.integration.canned_llm import CannedLLM
from tests.integration.helpers import ingest

DOCS = [
    {
        "external_id": "leave",
        "title": "Leave policy",
        "text": "Employees get 25 days of paid leave per year. Unused leave days expire at the end of March.",
    },
    {
        "external_id": "laptops",
        "title": "Equipment",
        "text": "Every employee receives a laptop on the first day. Laptops are replaced every three years.",
    },
]
QUESTION = "How many days of paid leave do employees get per year?"
CANNED_ANSWER = "Employees get 25 days of paid leave per year [1]."

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Series:
    series: Series = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            series[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return series


def total(series: Series, name: str, **labels: str) -> float | None:
    """The sum of the samples of ``name`` whose labels include ``labels``; ``None`` when there is none."""
    values = [v for (n, have), v in series.items() if n == name and set(labels.items()) <= have]
    return sum(values) if values else None


def grown(before: Series, after: Series, name: str, **labels: str) -> float:
    return (total(after, name, **labels) or 0.0) - (total(before, name, **labels) or 0.0)


def wait_until(condition: Callable[[], bool], timeout_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def with_llm(make_settings: Callable[..., Settings], canned: CannedLLM, **observability: object) -> Settings:
    provider = {"name": "canned", "kind": "openai_compat", "base_url": canned.base_url, "model": "m"}
    return make_settings(
        llm={"providers": [provider], "retry": {"max_attempts": 1}},
        observability=observability,
        cache={"answers": False},  # every answer must be generated (and judged)
    )


# --- traces ------------------------------------------------------------------------------------------------


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced_client(
    make_settings: Callable[..., Settings], embedder: OnnxEmbedder, exporter: InMemorySpanExporter
) -> Iterator[TestClient]:
    settings = make_settings(observability={"judge_sample_rate": 0.0})
    with TestClient(create_app(settings, embedder, span_exporter=exporter)) as client:
        yield client


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name}: {sorted(s.name for s in spans)}"
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def test_an_answer_has_one_span_per_stage_under_its_answer_and_request_spans(
    traced_client: TestClient, exporter: InMemorySpanExporter
) -> None:
    ingest(traced_client, DOCS)
    exporter.clear()
    response = traced_client.post("/v1/answer", json={"question": QUESTION})
    assert response.status_code == 200, response.text
    spans = list(exporter.get_finished_spans())

    request = only(spans, "POST /v1/answer")
    assert request.kind == SpanKind.SERVER
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["ragserve.request_id"] == response.headers["x-request-id"]
    answer = only(spans, "ragserve.answer")
    assert parent_of(answer) == span_id(request)
    # The keyword and dense halves ran in the retriever's thread pool, the search in an anyio worker thread;
    # feedback and the second fusion ran in the search thread.
    for stage in ("embed", "keyword", "dense", "fuse", "feedback", "dense_feedback", "refuse", "load", "generate"):
        assert parent_of(only(spans, f"ragserve.{stage}")) == span_id(answer), stage
    assert {s.context.trace_id for s in spans if s.context is not None} == {request.context.trace_id}


def test_a_streamed_answer_and_a_client_trace_are_continued(
    traced_client: TestClient, exporter: InMemorySpanExporter
) -> None:
    ingest(traced_client, DOCS)
    exporter.clear()
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    headers = {"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
    response = traced_client.post("/v1/answer", json={"question": QUESTION, "stream": True}, headers=headers)
    assert response.status_code == 200
    assert "event: done" in response.text
    spans = list(exporter.get_finished_spans())
    request = only(spans, "POST /v1/answer")
    assert request.parent is not None
    assert request.parent.span_id == int("b7ad6b7169203331", 16)
    answer = only(spans, "ragserve.answer")
    assert parent_of(answer) == span_id(request)
    assert parent_of(only(spans, "ragserve.generate")) == span_id(answer)
    assert parent_of(only(spans, "ragserve.dense")) == span_id(answer)
    assert {format(s.context.trace_id, "032x") for s in spans if s.context is not None} == {trace_id}


def test_ingestion_stages_are_spans_of_their_batch(traced_client: TestClient, exporter: InMemorySpanExporter) -> None:
    ingest(traced_client, DOCS)
    spans = list(exporter.get_finished_spans())
    batch = only(spans, "ragserve.ingest")
    for stage in ("parse", "chunk", "embed", "index"):
        children = [s for s in spans if s.name == f"ragserve.{stage}"]
        assert children, stage
        assert all(parent_of(s) == span_id(batch) for s in children), stage


# --- metrics -----------------------------------------------------------------------------------------------

# Series that each of ingest, search, answer (whole and streamed) and an error response must make grow.
GROWING: list[tuple[str, dict[str, str]]] = [
    ("ragserve_http_request_duration_seconds_count", {"route": "/v1/search", "method": "POST", "status": "200"}),
    ("ragserve_http_errors_total", {"route": "/v1/jobs/{job_id}", "status": "404", "code": "not_found"}),
    *[
        ("ragserve_stage_duration_seconds_count", {"stage": stage})
        for stage in ("parse", "chunk", "embed", "index", "keyword", "dense", "fuse", "load", "generate", "judge")
    ],
    ("ragserve_retrieval_top_similarity_score_count", {}),
    ("ragserve_retrieval_query_length_tokens_count", {}),
    ("ragserve_job_duration_seconds_count", {"status": "succeeded"}),
    ("ragserve_ingest_lag_seconds_count", {}),
    ("ragserve_ingest_documents_total", {"outcome": "succeeded"}),
    ("ragserve_ingest_chunks_total", {}),
    ("ragserve_embedding_cache_lookups_total", {"result": "miss"}),
    ("ragserve_answers_total", {"generator": "canned", "abstained": "false"}),
    ("ragserve_answer_first_token_seconds_count", {"generator": "llm"}),
    ("ragserve_answer_groundedness_score_count", {"judge": "llm"}),
    ("ragserve_llm_tokens_total", {"provider": "canned", "kind": "completion"}),
    ("ragserve_llm_requests_total", {"provider": "canned", "outcome": "success"}),
    ("ragserve_llm_first_token_seconds_count", {"provider": "canned"}),
]


def test_metrics_after_an_ingest_a_search_and_answers(
    make_settings: Callable[..., Settings], embedder: OnnxEmbedder
) -> None:
    with CannedLLM(CANNED_ANSWER, grade="0.9") as canned:
        settings = with_llm(make_settings, canned, judge_sample_rate=1.0)
        with TestClient(create_app(settings, embedder)) as client:
            before = scrape(client)
            ingest(client, DOCS)
            assert client.post("/v1/search", json={"query": "laptop replacement"}).status_code == 200
            whole = client.post("/v1/answer", json={"question": QUESTION}).json()
            assert whole["answer"] == CANNED_ANSWER
            streamed = client.post("/v1/answer", json={"question": QUESTION, "stream": True})
            assert "event: done" in streamed.text
            assert client.get("/v1/jobs/no-such-job").status_code == 404

            def judged_and_finished() -> bool:  # both are observed in the background
                now = scrape(client)
                judged = grown(before, now, "ragserve_answer_groundedness_score_count", judge="llm")
                return judged == 2 and grown(before, now, "ragserve_job_duration_seconds_count") == 1

            wait_until(judged_and_finished)
            after = scrape(client)
    missing = [f"{name}{labels}" for name, labels in GROWING if grown(before, after, name, **labels) <= 0]
    assert not missing, f"did not grow: {missing}"
    assert total(after, "ragserve_embedding_dimensions", model=embedder.model_id) == embedder.dimension
    assert (total(after, "ragserve_http_requests_in_flight") or 0) >= 1  # the scrape itself
    assert total(after, "ragserve_jobs_pending_documents") == 0
    assert total(after, "ragserve_llm_breaker_state", provider="canned") == 0  # closed
    assert canned.judged == 2
    # The judge model graded both answers 0.9: the (0.8, 0.9] bucket holds them.
    in_bucket = grown(before, after, "ragserve_answer_groundedness_score_bucket", judge="llm", le="0.9") - grown(
        before, after, "ragserve_answer_groundedness_score_bucket", judge="llm", le="0.8"
    )
    assert in_bucket == 2


# --- readiness ---------------------------------------------------------------------------------------------


def test_ready_sheds_load_above_max_in_flight(make_settings: Callable[..., Settings], embedder: OnnxEmbedder) -> None:
    with CannedLLM(CANNED_ANSWER) as canned:
        settings = with_llm(make_settings, canned, max_in_flight=1, judge_sample_rate=0.0)
        with TestClient(create_app(settings, embedder)) as client:
            ingest(client, DOCS)
            assert client.get("/ready").status_code == 200
            canned.release.clear()  # the model now holds every answer until released
            answers: list[httpx.Response] = []
            threads = [
                threading.Thread(target=lambda: answers.append(client.post("/v1/answer", json={"question": QUESTION})))
                for _ in range(2)
            ]
            for thread in threads:
                thread.start()
            try:
                wait_until(lambda: canned.waiting == 2)
                shed = client.get("/ready")
            finally:
                canned.release.set()
                for thread in threads:
                    thread.join(timeout=30)
            assert shed.status_code == 503
            body: dict[str, Any] = shed.json()
            assert body["status"] == "not_ready"
            assert body["failed"] == ["capacity"]
            assert body["checks"] == {"database": True, "index": True, "model": True, "capacity": False}
            assert [a.status_code for a in answers] == [200, 200]
            assert client.get("/ready").status_code == 200


def test_ready_is_503_naming_the_database_when_it_is_closed(client: TestClient) -> None:
    assert client.get("/ready").status_code == 200
    client.app.state.service.stores.close()  # what an unreachable database looks like to the service
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["failed"] == ["database"]
    assert response.json()["checks"]["index"] is True
