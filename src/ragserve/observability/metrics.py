"""Every Prometheus metric of ragserve, named ``ragserve_<part>_<thing>_<unit>`` with low-cardinality labels."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

from ragserve.observability.tracing import start_span

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Ingestion waits in a queue: its lags run from seconds to hours.
_QUEUE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
_UNIT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

HTTP_REQUEST_DURATION = Histogram(
    "ragserve_http_request_duration_seconds",
    "HTTP request latency by route template, method and status code.",
    ["route", "method", "status"],
    buckets=_LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge("ragserve_http_requests_in_flight", "HTTP requests being served now.")
HTTP_ERRORS = Counter(
    "ragserve_http_errors_total",
    "Error responses by route template, status code and error code (the body's error.code).",
    ["route", "status", "code"],
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
ANSWER_CACHE = Counter(
    "ragserve_answer_cache_lookups_total",
    "Answer cache lookups by result (hit, miss) and match (exact, semantic; none for a miss).",
    ["result", "match"],
)
EMBEDDING_CACHE = Counter("ragserve_embedding_cache_lookups_total", "Embedding cache lookups by result.", ["result"])
RETRIEVAL_DEGRADED = Counter(
    "ragserve_retrieval_degraded_total",
    "Hybrid searches answered by one half because the other failed or timed out.",
    ["failed"],
)
INDEX_QUERIES = Counter(
    "ragserve_index_queries_total",
    "Searches answered per collection and index version (a canary's share shows here).",
    ["collection", "version"],
)
QUEUE_DEPTH = Gauge(
    "ragserve_queue_depth_messages",
    "Messages in the ingestion queue of the broker: ready, delayed (retry backoff) and dead-lettered.",
    ["queue", "kind"],
)
JOBS_PENDING = Gauge("ragserve_jobs_pending_documents", "Documents waiting or being ingested.")
ANSWERS = Counter(
    "ragserve_answers_total",
    "Answers produced, by generator and whether they abstained.",
    ["generator", "abstained"],
)


@contextmanager
def timed(stage: str) -> Iterator[None]:
    """Observe the duration of the block in ``ragserve_stage_duration_seconds{stage=...}`` and trace it as
    the span ``ragserve.<stage>``, a child of the current span."""
    with start_span(f"ragserve.{stage}"):
        start = time.perf_counter()
        try:
            yield
        finally:
            STAGE_DURATION.labels(stage=stage).observe(time.perf_counter() - start)


# --- retrieval, embedding, jobs ----------------------------------------------------------------------------
RETRIEVAL_TOP_SIMILARITY = Histogram(
    "ragserve_retrieval_top_similarity_score",
    "Cosine similarity of the best dense hit of each search with a dense half; a falling median is drift.",
    buckets=_UNIT_BUCKETS,
)
RETRIEVAL_QUERY_LENGTH = Histogram(
    "ragserve_retrieval_query_length_tokens",
    "Model tokens of each search query (special tokens excluded).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
EMBEDDING_DIMENSIONS = Gauge(
    "ragserve_embedding_dimensions", "Vector length of the loaded embedding model, by model.", ["model"]
)
EMBEDDING_BATCH_TEXTS = Histogram(
    "ragserve_embedding_batch_texts",
    "Texts in each model run of the embedding micro-batcher, by kind (query or document).",
    ["kind"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
EMBEDDING_QUEUE_WAIT = Histogram(
    "ragserve_embedding_queue_wait_seconds",
    "Time a call's texts waited in the embedding micro-batcher before their model run, by kind.",
    ["kind"],
    buckets=_LATENCY_BUCKETS,
)
JOB_DURATION = Histogram(
    "ragserve_job_duration_seconds",
    "Time from an ingestion job's creation to its last document finished, by final status.",
    ["status"],
    buckets=_QUEUE_BUCKETS,
)
INGEST_LAG = Histogram(
    "ragserve_ingest_lag_seconds",
    "Time from a document's submission to it being searchable (written and indexed).",
    buckets=_QUEUE_BUCKETS,
)

PARSE_REJECTIONS = Counter(
    "ragserve_ingest_parse_rejections_total",
    "Files refused by a parsing guard or limit (binary content, zip bomb, depth, pages, text, time, memory, "
    "crashed parser), by reason: the job error's code.",
    ["reason"],
)
PARSER_RESTARTS = Counter(
    "ragserve_ingest_parser_restarts_total",
    "Parser child processes killed and replaced after a file, by cause: the job error's code.",
    ["cause"],
)

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
ANSWER_GROUNDEDNESS = Histogram(
    "ragserve_answer_groundedness_score",
    "Groundedness of sampled answers in their cited passages, 0 to 1, by judge: llm or lexical.",
    ["judge"],
    buckets=_UNIT_BUCKETS,
)
AUDIT_EVENTS = Counter(
    "ragserve_audit_events_total", "Audit events recorded, by action and outcome.", ["action", "outcome"]
)
AUDIT_FAILURES = Counter(
    "ragserve_audit_write_failures_total", "Audit events that could not be stored (they were still logged)."
)


# --- rate limits and quotas --------------------------------------------------------------------------------
RATE_LIMITED = Counter(
    "ragserve_rate_limited_total",
    "Requests refused with 429, by kind: key or ip (a token bucket), or the tenant quota's name "
    "(requests, llm_tokens, ingest_bytes, stored_chunks).",
    ["kind"],
)
RATE_LIMIT_FAIL_OPEN = Counter(
    "ragserve_rate_limit_fail_open_total",
    "Limit and quota checks let through unchecked because the limiter's backend (Redis) failed, by check.",
    ["check"],
)
ANSWER_CACHE_SAVED_TOKENS = Counter(
    "ragserve_answer_cache_saved_tokens_total",
    "LLM tokens (prompt and completion) not spent because the answer came from the cache, by match.",
    ["match"],
)


# --- keyword search in memory (embedded store) -----------------------------------------------------------
KEYWORD_SEARCHES = Counter(
    "ragserve_store_keyword_searches_total",
    "Embedded-store keyword searches by engine: memory (the in-memory BM25 copy) or fts5.",
    ["engine"],
)
KEYWORD_REBUILD_DURATION = Histogram(
    "ragserve_store_keyword_rebuild_seconds",
    "Time to copy one FTS5 table into the in-memory BM25 accelerator.",
    buckets=_LATENCY_BUCKETS,
)
KEYWORD_SNAPSHOT_BYTES = Gauge(
    "ragserve_store_keyword_snapshot_bytes", "Memory of the in-memory BM25 accelerator's snapshots, all indexes."
)
