"""ASGI middleware: request ids, the request body size limit, per-route latency metrics, requests in flight
and a server span per request."""

from __future__ import annotations

import json
import re
import time
import uuid
from contextlib import ExitStack
from types import TracebackType

from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragserve.observability.logging import bind_request_id
from ragserve.observability.metrics import HTTP_ERRORS, HTTP_IN_FLIGHT, HTTP_REQUEST_DURATION
from ragserve.observability.tracing import Tracing, start_span

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
_TRACE_CONTEXT = TraceContextTextMapPropagator()


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/v1/documents/{document_id}``), or ``unmatched``: a metric label
    of bounded cardinality, unlike the path."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class InFlightRequests:
    """Requests one app is serving now (``ragserve_http_requests_in_flight``); ``/ready`` sheds load when more
    than ``limit`` are in flight."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def __enter__(self) -> None:
        self.count += 1
        HTTP_IN_FLIGHT.inc()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.count -= 1
        HTTP_IN_FLIGHT.dec()

    def has_capacity(self, excluding: int = 0) -> bool:
        """Whether the requests in flight, less ``excluding`` (the probe asking), are within the limit."""
        return self.count - excluding <= self.limit


class RequestContextMiddleware:
    """Gives each request an id (the client's ``X-Request-ID`` if sane) that its logs carry and a server span
    (a child of the client's ``traceparent``, if any) in the tracer of ``app.state.tracing``; counts it in
    ``in_flight``; rejects bodies over ``max_body_bytes`` with 413 before the route reads them; records
    latency by route template."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, in_flight: InFlightRequests) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _CLIENT_REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        tracing: Tracing | None = getattr(scope["app"].state, "tracing", None) if "app" in scope else None
        parent = _TRACE_CONTEXT.extract({k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()})
        method = scope.get("method", "")
        status_holder = {"status": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        with ExitStack() as stack:
            if tracing is not None:
                stack.enter_context(tracing.activate())
            stack.enter_context(bind_request_id(request_id))
            stack.enter_context(self.in_flight)
            span = stack.enter_context(start_span(method, kind=SpanKind.SERVER, parent=parent))
            start = time.perf_counter()
            try:
                length = headers.get(b"content-length")
                if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                    await self._too_large(send_with_id, request_id)
                else:
                    await self.app(scope, self._limited(receive), send_with_id)
            finally:
                # Also when the app raised: the server's error middleware, outside this one, then answers 500.
                template, status = route_template(scope), status_holder["status"]
                elapsed = time.perf_counter() - start
                HTTP_REQUEST_DURATION.labels(route=template, method=method, status=str(status)).observe(elapsed)
                span.update_name(f"{method} {template}")
                span.set_attributes(
                    {
                        "http.request.method": method,
                        "http.route": template,
                        "http.response.status_code": status,
                        "ragserve.request_id": request_id,
                    }
                )
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))

    def _limited(self, receive: Receive) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # FastAPI re-raises HTTPException from body reading; anything else becomes a 400.
                    raise HTTPException(413, f"the request body is over the limit of {self.max_body_bytes} bytes")
            return message

        return limited_receive

    async def _too_large(self, send: Send, request_id: str) -> None:
        HTTP_ERRORS.labels(route="unmatched", status="413", code="payload_too_large").inc()
        body = json.dumps(
            {
                "error": {
                    "code": "payload_too_large",
                    "message": f"the request body is over the limit of {self.max_body_bytes} bytes",
                    "request_id": request_id,
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
