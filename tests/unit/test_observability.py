"""Tracing and logging without a server: spans reach the exporter of the active provider only, worker threads
inherit the current span through a copied context, and log records carry request and trace ids."""

from __future__ import annotations

import contextvars
import json
import logging
from concurrent.futures import ThreadPoolExecutor

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ragserve.observability.logging import ContextFilter, JsonFormatter, bind_request_id
from ragserve.observability.metrics import timed
from ragserve.observability.tracing import Tracing, otlp_traces_url, start_span
from ragserve.settings import ObservabilitySettings


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("ragserve.test", logging.WARNING, __file__, 1, message, (), None)
    made.__dict__.update(extra)
    ContextFilter().filter(made)
    return made


def test_timed_stages_are_child_spans_also_in_worker_threads() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(ObservabilitySettings(), exporter)

    def stage() -> None:
        with timed("keyword"):
            pass

    with tracing.activate(), start_span("ragserve.answer") as parent, ThreadPoolExecutor(1) as pool:
        pool.submit(contextvars.copy_context().run, stage).result()
    tracing.shutdown()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"ragserve.answer", "ragserve.keyword"}
    child = spans["ragserve.keyword"]
    assert child.parent is not None
    assert child.parent.span_id == parent.get_span_context().span_id


def test_spans_go_only_to_the_active_provider() -> None:
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    one, two = Tracing(ObservabilitySettings(), first), Tracing(ObservabilitySettings(), second)
    with one.activate(), timed("parse"):
        pass
    with timed("parse"):  # no provider active: a no-op span
        pass
    assert [s.name for s in first.get_finished_spans()] == ["ragserve.parse"]
    assert second.get_finished_spans() == ()
    one.shutdown()
    two.shutdown()


def test_otlp_endpoint_without_a_path_gets_the_traces_path() -> None:
    assert otlp_traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert otlp_traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert otlp_traces_url("https://otel.example/custom/traces") == "https://otel.example/custom/traces"


def test_json_log_records_carry_request_and_trace_ids_and_hide_credentials() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(ObservabilitySettings(), exporter)
    with tracing.activate(), bind_request_id("req-42"), start_span("ragserve.answer") as span:
        line = JsonFormatter().format(record("answered %s", api_key="sk-secret", provider="local"))
    tracing.shutdown()
    entry = json.loads(line)
    assert entry["message"] == "answered %s"
    assert entry["request_id"] == "req-42"
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert entry["span_id"] == format(span.get_span_context().span_id, "016x")
    assert entry["level"] == "warning"
    assert entry["provider"] == "local"
    assert entry["api_key"] == "[redacted]"
    assert "sk-secret" not in line


def test_outside_a_request_the_ids_are_null() -> None:
    entry = json.loads(JsonFormatter().format(record("starting")))
    assert entry["request_id"] is None
    assert entry["trace_id"] is None
