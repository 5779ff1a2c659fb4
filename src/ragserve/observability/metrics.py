"""Every Prometheus metric of ragserve, named ``ragserve_<part>_<thing>_<unit>`` with low-cardinality labels."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUEST_DURATION = Histogram(
    "ragserve_http_request_duration_seconds",
    "HTTP request latency by route template, method and status code.",
    ["route", "method", "status"],
    buckets=_LATENCY_BUCKETS,
)
STAGE_DURATION = Histogram(
    "ragserve_stage_duration_seconds",
    "Latency of one pipeline stage: embed, keyword, dense, fuse, generate, parse, chunk, index.",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
INGEST_DOCUMENTS = Counter(
    "ragserve_ingest_documents_total", "Documents processed by ingestion, by outcome.", ["outcome"]
)
INGEST_CHUNKS = Counter("ragserve_ingest_chunks_total", "Chunks written by ingestion.")
EMBEDDING_CACHE = Counter("ragserve_embedding_cache_lookups_total", "Embedding cache lookups by result.", ["result"])
RETRIEVAL_DEGRADED = Counter(
    "ragserve_retrieval_degraded_total",
    "Hybrid searches answered by one half because the other failed or timed out.",
    ["failed"],
)
JOBS_PENDING = Gauge("ragserve_jobs_pending_documents", "Documents waiting or being ingested.")
ANSWERS = Counter(
    "ragserve_answers_total",
    "Answers produced, by generator and whether they abstained.",
    ["generator", "abstained"],
)


@contextmanager
def timed(stage: str) -> Iterator[None]:
    """Observe the duration of the block in ``ragserve_stage_duration_seconds{stage=...}``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_DURATION.labels(stage=stage).observe(time.perf_counter() - start)


# --- LLM gateway -------------------------------------------------------------------------------------------
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
LLM_BREAKER_STATE = Gauge(
    "ragserve_llm_breaker_state", "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open.", ["provider"]
)
LLM_REQUESTS = Counter(
    "ragserve_llm_requests_total",
    "Attempts at an LLM provider by outcome: success, retryable, failed, rejected (breaker open or limit full).",
    ["provider", "outcome"],
)
LLM_TOKENS = Counter(
    "ragserve_llm_tokens_total",
    "Tokens spent per provider, principal (API key label) and kind (prompt or completion).",
    ["provider", "principal", "kind"],
)
LLM_FIRST_TOKEN = Histogram(
    "ragserve_llm_first_token_seconds",
    "Time from a streamed request to the provider's first text, per provider.",
    ["provider"],
    buckets=_LATENCY_BUCKETS,
)
LLM_FALLBACKS = Counter(
    "ragserve_llm_fallbacks_total", "Answers that fell back to the extractive generator, by reason.", ["reason"]
)
ANSWER_FIRST_TOKEN = Histogram(
    "ragserve_answer_first_token_seconds",
    "Time from the start of a streamed answer to its first piece of text, by generator.",
    ["generator"],
    buckets=_LATENCY_BUCKETS,
)
