"""Logging: every record carries the request id and the trace and span ids of the code that logged it, as
plain text or one JSON object per line (``observability.json_logs``).

The request id is set by the HTTP middleware (``bind_request_id``) in a context variable, so records logged
by worker threads and tasks of that request carry it too. Extra fields whose names look like credentials are
replaced by ``[redacted]``; settings hold secrets as ``SecretStr``, which prints masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from opentelemetry import trace

_REQUEST_ID: ContextVar[str | None] = ContextVar("ragserve_request_id", default=None)
_SECRET_NAME = re.compile(r"(?i)pass(word)?|secret|token|api_?key|authori[sz]ation|cookie|credential")
# Attributes every LogRecord has (and uvicorn's ANSI-coloured copy of its message); anything else on a record
# came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "trace_id",
    "span_id",
    "color_message",
}
_PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s [request_id=%(request_id)s trace_id=%(trace_id)s]: %(message)s"


@contextmanager
def bind_request_id(request_id: str) -> Iterator[None]:
    """Records logged in the block (and in tasks and threads it starts) carry ``request_id``."""
    token = _REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        _REQUEST_ID.reset(token)


class ContextFilter(logging.Filter):
    """Adds ``request_id``, ``trace_id`` and ``span_id`` (``None`` outside a request or span) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _REQUEST_ID.get()
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        else:
            record.trace_id = record.span_id = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, request and trace ids, the
    ``extra`` fields (credential-like names redacted), and the formatted exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "trace_id": getattr(record, "trace_id", None),
            "span_id": getattr(record, "span_id", None),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = "[redacted]" if _SECRET_NAME.search(key) else value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str, *, json_logs: bool) -> None:
    """Send every logger's records (uvicorn's included) to standard error through one handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if json_logs else logging.Formatter(_PLAIN_FORMAT))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers = []
        uvicorn_logger.propagate = True
