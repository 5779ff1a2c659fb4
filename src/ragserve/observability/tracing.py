"""OpenTelemetry traces: one ``TracerProvider`` per app, built from ``ObservabilitySettings`` in its lifespan.

The provider is never installed as OpenTelemetry's global one: ``Tracing.activate()`` puts its tracer in a
context variable, which asyncio tasks inherit, and so do worker threads started through
``anyio.to_thread.run_sync`` or ``contextvars.copy_context().run``. ``start_span`` (and through it
``metrics.timed``) traces into the provider of the app serving the request; with none active, spans are
no-ops. Spans always get ids, so logs carry a trace id; they leave the process only when an exporter is set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

from ragserve import __version__
from ragserve.settings import ObservabilitySettings

_NO_TRACER = trace.NoOpTracer()
_TRACER: ContextVar[Tracer] = ContextVar("ragserve_tracer", default=_NO_TRACER)


def otlp_traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of ``endpoint``: a bare collector address gets ``/v1/traces``, as
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` does."""
    if urlsplit(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


class Tracing:
    """An app's tracer provider. ``exporter`` (tests pass an ``InMemorySpanExporter``) receives each span as
    it ends; ``otlp_endpoint`` adds batched export to a collector. ``shutdown()`` flushes and stops both."""

    def __init__(self, settings: ObservabilitySettings, exporter: SpanExporter | None = None) -> None:
        resource = Resource.create({SERVICE_NAME: settings.service_name, SERVICE_VERSION: __version__})
        self._provider = TracerProvider(resource=resource)
        if exporter is not None:
            self._provider.add_span_processor(SimpleSpanProcessor(exporter))
        if settings.otlp_endpoint is not None:
            # Imported here: the exporter pulls in protobuf and requests, which a service without a collector
            # (and every CLI command) does not need.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            otlp = OTLPSpanExporter(endpoint=otlp_traces_url(settings.otlp_endpoint))
            self._provider.add_span_processor(BatchSpanProcessor(otlp))
        self._tracer = self._provider.get_tracer("ragserve", __version__)

    @property
    def tracer(self) -> Tracer:
        return self._tracer

    @contextmanager
    def activate(self) -> Iterator[None]:
        """Make this provider's tracer the one ``start_span`` uses in the block (and tasks started in it)."""
        token = _TRACER.set(self._tracer)
        try:
            yield
        finally:
            _TRACER.reset(token)

    def shutdown(self) -> None:
        """Export what is buffered and stop; spans started afterwards are dropped."""
        self._provider.shutdown()


def current_tracer() -> Tracer:
    """The active app's tracer, or a no-op one."""
    return _TRACER.get()


@contextmanager
def start_span(
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Context | None = None,
) -> Iterator[Span]:
    """A span that is current in the block, a child of the current span (or of ``parent``). An exception
    leaving the block is recorded on it and sets its status to error."""
    with current_tracer().start_as_current_span(name, context=parent, kind=kind, attributes=attributes) as span:
        yield span


def open_span(name: str, parent: Span | None = None) -> Span:
    """A started span that is not made current, for work that spans ``yield``s of an async generator (which
    may resume in another context); the caller ends it. Child of ``parent``, else of the current span."""
    context = trace.set_span_in_context(parent) if parent is not None else None
    return current_tracer().start_span(name, context=context)
