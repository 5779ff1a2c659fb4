"""All configuration of ragserve, read once from the environment (``RAGSERVE_`` prefix, ``__`` for nesting).

Example: ``RAGSERVE_SERVER__PORT=9000``, ``RAGSERVE_RETRIEVAL__HYBRID_ALPHA=0.6``. Secrets may also come from
files in ``/run/secrets`` (Kubernetes-mounted). Built in ``main()``/``create_app()`` and passed down; no other
module reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ragserve.settings_llm import LLMSettings
from ragserve.settings_security import AuditSettings, AuthSettings, CorsSettings, HeaderSettings, RateLimitSettings


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class LimitSettings(BaseModel):
    """Request limits enforced at the API edge."""

    max_query_chars: int = Field(default=2000, ge=1)
    max_documents_per_request: int = Field(default=100, ge=1)
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    max_request_bytes: int = Field(default=80 * 1024 * 1024, ge=1)
    max_k: int = Field(default=100, ge=1)


class EmbeddingSettings(BaseModel):
    backend: Literal["onnx"] = "onnx"
    # 8: on CPU, sorted batches of 8 ran 8% faster than 32 (the attention work of a batch stays in cache) and
    # leave almost no padding in an ingestion claim's ~280 texts (bench/README.md, "Embedding batches of 8").
    # An accelerator wants larger batches.
    batch_size: int = Field(default=8, ge=1, le=512, description="texts per ONNX Runtime call, sorted by length")
    max_seq_length: int = Field(default=256, ge=16, le=512)
    # int8: the encoder's weight MatMuls quantized per channel, built from the fp32 file at first start
    # (bench/README.md, "Int8 embeddings"). The vectors differ, so a data dir built under one precision refuses
    # to open under the other.
    precision: Literal["fp32", "int8"] = Field(
        default="fp32", description="ONNX encoder precision; int8 is faster with slightly different vectors"
    )
    threads: int = Field(default=0, ge=0, description="ONNX Runtime intra-op threads; 0 = all cores")
    allow_spinning: bool = Field(
        default=False, description="let idle ONNX Runtime threads spin: faster bulk embedding, slower queries"
    )
    cache_dir: Path | None = Field(
        default=None, description="where the built ONNX model is kept; default data_dir/models"
    )
    # Off: on CPU a batch costs as much per text as single calls, so batching only reorders work (bench/README.md).
    micro_batching: bool = Field(
        default=False, description="merge concurrent embedding calls into batches, queries before documents"
    )
    batch_window_ms: float = Field(
        default=10.0, ge=0.0, le=50.0, description="longest a queued text waits for others to join its batch"
    )
    max_batch: int = Field(default=64, ge=1, description="texts in one micro-batch of queries")
    max_document_batch: int = Field(
        default=4, ge=1, description="texts in one micro-batch of documents, which then yield to queued queries"
    )

    @model_validator(mode="after")
    def _check_batches(self) -> EmbeddingSettings:
        if self.max_document_batch > self.max_batch:
            raise ValueError(
                f"embedding.max_document_batch ({self.max_document_batch}) exceeds "
                f"embedding.max_batch ({self.max_batch})"
            )
        return self


class ChunkingSettings(BaseModel):
    max_tokens: int = Field(default=200, ge=16, le=512)
    overlap_tokens: int = Field(default=40, ge=0)


class VectorIndexSettings(BaseModel):
    """HNSW parameters; ``exact_search_max`` is the filtered-candidate count below which search is exact.

    ``precision`` is the embedded backend's precision for index versions created from now on (version 1 of a
    new collection, and new versions unless their request names one): ``f32`` (the HNSW graph), or ``f16``,
    ``int8``, ``binary`` codes whose ``max(k, rescore_min_candidates)`` best (binary: ``max(k * rescore_factor,
    rescore_min_candidates)``) are rescored with the stored float32 vectors. An existing index version keeps the
    precision it was built with. ``ef_search`` 256: at 1M chunks, recall@10 against exact search is 0.951 with it
    and 0.921 with 128, for 0.2 ms more per search (``bench/results/scale-sqlite-1000000-recall-by-ef.json``)."""

    m: int = Field(default=16, ge=4, le=128)
    ef_construction: int = Field(default=200, ge=16)
    ef_search: int = Field(default=256, ge=10)
    exact_search_max: int = Field(default=20_000, ge=0)
    save_interval_seconds: float = Field(default=30.0, gt=0)
    precision: Literal["f32", "f16", "int8", "binary"] = "f32"
    rescore_factor: int = Field(default=4, ge=1, le=100, description="binary: candidates rescored per hit wanted")
    rescore_min_candidates: int = Field(default=100, ge=1, le=100_000, description="candidates rescored at least")


class RetrievalSettings(BaseModel):
    default_mode: Literal["hybrid", "dense", "keyword"] = "hybrid"
    fusion: Literal["zscore", "rrf"] = "zscore"
    hybrid_alpha: float = Field(default=0.5, ge=0.0, le=1.0, description="weight of the dense half")
    candidates: int = Field(default=100, ge=10, le=2000, description="hits taken from each half before fusion")
    rrf_k: int = Field(default=60, ge=1)
    document_weight: float = Field(
        default=0.9,
        ge=0.0,
        le=1.0,
        description="z-score fusion: weight of the document-level fusion (each half's best chunk per document) "
        "in a chunk's score; 0 fuses chunks alone",
    )
    dense_feedback_chunks: int = Field(
        default=3,
        ge=0,
        le=50,
        description="dense pseudo-relevance feedback (Rocchio): first-fusion chunks read (0: off)",
    )
    dense_feedback_weight: float = Field(
        default=0.5, ge=0.0, le=2.0, description="how far the query vector moves towards those chunks' mean"
    )
    title_weight: float = Field(default=1.0, gt=0.0, description="BM25 weight of title terms vs body terms")
    feedback_chunks: int = Field(
        default=5, ge=0, le=50, description="keyword pseudo-relevance feedback: chunks read (0: off; 5 measured best)"
    )
    feedback_max_postings: int = Field(
        default=5_000,
        ge=0,
        description="the expansion search's cost bound: expansion terms are kept while the sum of the numbers of "
        "chunks holding them stays under this (0: no bound)",
    )
    feedback_terms: int = Field(default=20, ge=1, le=100, description="expansion terms searched for")
    feedback_weight: float = Field(default=0.2, ge=0.0, le=1.0, description="weight of the expansion search")
    feedback_from: Literal["keyword", "fused"] = Field(
        default="fused", description="hybrid feedback chunks: the keyword half's best, or the first fusion's best"
    )
    rerank_candidates: int = Field(
        default=30, ge=0, le=200, description="fused chunks the reranker reorders, when one is configured (0: none)"
    )
    half_timeout_seconds: float = Field(
        default=2.0, gt=0.0, description="a hybrid half slower than this is dropped (degraded answer)"
    )


class RerankerSettings(BaseModel):
    """A reranking server (``/v1/rerank``, e.g. llama.cpp ``--reranking`` or vLLM with a cross-encoder); off
    unless ``base_url`` is set. ``retrieval.rerank_candidates`` chunks of the fused ranking are reordered."""

    base_url: str | None = Field(default=None, description="e.g. http://reranker:8080/v1")
    model: str = ""
    api_key: SecretStr | None = None
    timeout_seconds: float = Field(default=5.0, gt=0.0)


class RetrievalOverrides(BaseModel):
    """A collection's own retrieval settings; unset fields use ``RetrievalSettings``. The best fusion differs
    by corpus, so each collection can be tuned (e.g. with ``bench/fusion_study.py``) without a restart."""

    model_config = ConfigDict(extra="forbid")

    default_mode: Literal["hybrid", "dense", "keyword"] | None = None
    fusion: Literal["zscore", "rrf"] | None = None
    hybrid_alpha: float | None = Field(default=None, ge=0.0, le=1.0)
    rrf_k: int | None = Field(default=None, ge=1)
    document_weight: float | None = Field(default=None, ge=0.0, le=1.0)
    candidates: int | None = Field(default=None, ge=10, le=2000)
    feedback_chunks: int | None = Field(default=None, ge=0, le=50)
    dense_feedback_chunks: int | None = Field(default=None, ge=0, le=50)
    dense_feedback_weight: float | None = Field(default=None, ge=0.0, le=2.0)
    feedback_terms: int | None = Field(default=None, ge=1, le=100)
    feedback_max_postings: int | None = Field(default=None, ge=0)
    feedback_weight: float | None = Field(default=None, ge=0.0, le=1.0)
    feedback_from: Literal["keyword", "fused"] | None = None
    rerank_candidates: int | None = Field(default=None, ge=0, le=200)

    def apply(self, base: RetrievalSettings) -> RetrievalSettings:
        return base.model_copy(update=self.model_dump(exclude_none=True))


class AnswerSettings(BaseModel):
    """Extractive answers: ``k`` contexts, at most ``max_sentences`` sentences and ``max_words`` words.
    ``min_confidence``: abstain when the abstention model (``ragserve.llm.abstention``) gives the best sentence
    less confidence than this of answering the question; 0 (the default) turns that off, higher abstains more.
    0.45 was tuned on CLAP NQ, where it abstains on ~70% of unanswerable questions, but it also abstains on 21%
    of SQuAD's answerable ones (bench/README.md, "Abstention")."""

    k: int = Field(default=6, ge=1, le=50)
    max_sentences: int = Field(default=3, ge=1, le=20)
    max_words: int = Field(default=60, ge=5)
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)  # = DEFAULT_ABSTENTION.min_confidence


class JobSettings(BaseModel):
    """The in-process job runner. Each worker claims up to ``claim_documents`` staged documents at once (fewer
    once their payloads reach ``claim_max_mb``) and embeds all their chunks in one length-sorted call: more
    small documents per claim waste less of the model's time on padding (``bench/README.md``)."""

    workers: int = Field(default=1, ge=1, le=32)
    poll_interval_seconds: float = Field(default=0.5, gt=0)
    retry_seconds: float = Field(default=5.0, gt=0, description="pause before retrying a batch that failed whole")
    claim_documents: int = Field(default=128, ge=1, le=1000, description="documents a worker takes at once")
    claim_max_mb: int = Field(default=64, ge=1, description="staged payload a worker takes at once, at most")


class ParsingSettings(BaseModel):
    """Limits on parsing uploaded files, which may be hostile: zip bombs, decompression bombs, deeply nested
    HTML, binaries under a text name. With ``isolate`` (the default), HTML, PDF, Word and JSON files are parsed
    in up to ``workers`` child processes, each under an address-space limit of ``memory_limit_mb`` and killed
    after ``timeout_seconds`` on one file; plain text and Markdown are parsed in process (linear in their
    size). A file over a limit fails alone, with an error naming the limit, in its job."""

    isolate: bool = Field(default=True, description="parse HTML, PDF, Word and JSON files in child processes")
    workers: int = Field(default=2, ge=1, le=32, description="parser processes at most, started when needed")
    timeout_seconds: float = Field(default=60.0, gt=0, description="wall-clock time to parse one file")
    memory_limit_mb: int = Field(default=1024, ge=256, description="address space of one parser process")
    max_pages: int = Field(default=5000, ge=1, description="pages of one PDF")
    max_text_chars: int = Field(default=20_000_000, ge=1, description="text extracted from one file")
    max_html_depth: int = Field(default=512, ge=16, description="element nesting of one HTML page")
    max_archive_bytes: int = Field(default=256 * 1024 * 1024, ge=1, description="a .docx's size once unzipped")
    max_archive_ratio: float = Field(default=200.0, ge=1.0, description="uncompressed/compressed, per zip entry")
    max_archive_entries: int = Field(default=10_000, ge=1, description="files inside one .docx")


class StoreSettings(BaseModel):
    """Where documents, chunks, vectors and jobs live. ``sqlite``: one file in ``data_dir`` plus HNSW files,
    for one process. ``postgres``: PostgreSQL with pgvector, shared by any number of API and worker processes;
    ``postgres_read_urls`` are read replicas that searches may use (they tolerate replica lag).
    ``vector_precision`` picks the pgvector index: ``f32`` (the vectors as stored), ``f16`` (halfvec) or
    ``binary`` (bit, with the top candidates rescored at full precision). ``sqlite_connections`` bounds the
    SQLite connections that all threads share, and ``sqlite_cache_mb`` their page caches together (each
    connection keeps its own). ``keyword_accelerator``: the embedded store keeps the BM25 postings of the searched
    FTS5 tables in memory as well, ranked exactly as FTS5 ranks but much faster (``stores/sparse_bm25.py``), up
    to ``keyword_accelerator_max_chunks`` chunks in all."""

    backend: Literal["sqlite", "postgres"] = "sqlite"
    postgres_url: SecretStr | None = Field(default=None, description="e.g. postgresql://user:pass@host:5432/db")
    postgres_read_urls: list[SecretStr] = Field(default_factory=list)
    pool_min_size: int = Field(default=1, ge=0, le=100, description="connections kept open per pool")
    pool_max_size: int = Field(default=10, ge=1, le=200, description="connections at most per pool")
    vector_precision: Literal["f32", "f16", "binary"] = "f32"
    sqlite_connections: int = Field(default=8, ge=1, le=64, description="SQLite connections at most, all threads")
    sqlite_cache_mb: int = Field(default=64, ge=8, description="SQLite page cache of all connections together")
    keyword_accelerator: bool = Field(
        default=True, description="sqlite: answer unfiltered keyword searches from an in-memory copy of FTS5's BM25"
    )
    keyword_accelerator_max_chunks: int = Field(
        default=2_000_000, ge=0, description="sqlite: chunks the in-memory BM25 copies hold at most (~0.6 KB each)"
    )

    @model_validator(mode="after")
    def _check_backend(self) -> StoreSettings:
        if self.backend == "postgres" and self.postgres_url is None:
            raise ValueError(
                "store.backend is postgres but store.postgres_url is not set (RAGSERVE_STORE__POSTGRES_URL)"
            )
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(
                f"store.pool_min_size ({self.pool_min_size}) exceeds store.pool_max_size ({self.pool_max_size})"
            )
        return self


class QueueSettings(BaseModel):
    """Where ingestion runs. ``local``: in this process (the embedded default). ``rabbitmq``: jobs are published
    through a transactional outbox to a RabbitMQ priority queue and run by ``ragserve worker`` processes
    (Dramatiq actors; late acks, leases with heartbeats, retries with exponential backoff, a dead-letter
    queue). ``in_process_workers`` > 0 also consumes in the API process (one-box deployments and tests)."""

    backend: Literal["local", "rabbitmq"] = "local"
    rabbitmq_url: SecretStr | None = None
    ingest_queue: str = Field(default="ragserve.ingest", pattern=r"^[A-Za-z0-9_.\-]{1,200}$")
    items_per_message: int = Field(default=16, ge=1, le=256, description="documents per broker message")
    small_job_items: int = Field(default=16, ge=1, description="jobs up to this size get the top priority")
    lease_seconds: float = Field(default=30.0, gt=0, description="a worker's claim on items without heartbeat")
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=5, ge=0, le=50)
    min_backoff_seconds: float = Field(default=1.0, gt=0)
    max_backoff_seconds: float = Field(default=60.0, gt=0)
    message_time_limit_seconds: float = Field(default=1800.0, gt=0)
    relay_interval_seconds: float = Field(default=1.0, gt=0, description="outbox relay period")
    republish_after_seconds: float = Field(
        default=300.0, gt=0, description="publish again a message whose items still wait after this long"
    )
    worker_threads: int = Field(default=1, ge=1, le=64, description="messages one worker process runs at once")
    in_process_workers: int = Field(default=0, ge=0, le=16)
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _check(self) -> QueueSettings:
        if self.backend == "rabbitmq" and self.rabbitmq_url is None:
            raise ValueError("queue.backend rabbitmq needs queue.rabbitmq_url (RAGSERVE_QUEUE__RABBITMQ_URL)")
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError("queue.heartbeat_seconds must be shorter than queue.lease_seconds")
        return self


class RedisSettings(BaseModel):
    """Redis for state shared by replicas: the answer cache and the invalidation of in-process caches."""

    url: SecretStr | None = Field(default=None, description="e.g. redis://redis:6379/0; unset: no Redis")
    key_prefix: str = Field(default="ragserve", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")


class CacheSettings(BaseModel):
    """The answer cache: exact questions (normalised) per collection, k, filters, index route and generator;
    an answer is dropped when any document it was built from changes, and after ``answer_ttl_seconds``.
    With ``semantic``, a question with no exact entry is served the answer of the most similar cached question
    (cosine similarity of their query vectors at least ``semantic_threshold``) whose key differs only in the
    question text. It lives in Redis when ``redis.url`` is set, else in this process (refused with a shared
    PostgreSQL store and no Redis: other processes' writes could not invalidate it). ``state_ttl_seconds``
    bounds how long a replica may use a collection's cached route and settings after a change it missed."""

    answers: bool = True
    answer_ttl_seconds: float = Field(default=3600.0, gt=0)
    answer_max_entries: int = Field(default=10_000, ge=1, description="in-process cache only")
    state_ttl_seconds: float = Field(default=5.0, ge=0)
    semantic: bool = Field(default=True, description="serve an answer cached for a similar question (same scope)")
    semantic_threshold: float = Field(default=0.95, gt=0.0, le=1.0, description="least cosine similarity served")
    semantic_max_entries_per_scope: int = Field(
        default=1000, ge=1, le=10_000, description="question vectors kept per scope (Redis: read on each lookup)"
    )
    embeddings: Literal["store", "redis"] = Field(
        default="store", description="where chunk embeddings are cached: the document store, or Redis"
    )
    embedding_ttl_seconds: float | None = Field(default=None, gt=0, description="Redis only; unset: no expiry")


class IndexVersionSettings(BaseModel):
    """Index versions: a promotion is refused when the candidate's nDCG@10 on the collection's golden set is
    more than ``promote_margin`` below the active version's (unless forced)."""

    promote_margin: float = Field(default=0.01, ge=0.0, le=1.0)
    require_golden_set: bool = Field(default=False, description="refuse promotions of collections without one")
    build_batch_documents: int = Field(default=32, ge=1, le=1024, description="documents per build step")


class ObservabilitySettings(BaseModel):
    """Traces, logs, load shedding and the sampled answer judge. Metrics are always on, at ``/metrics``.

    ``otlp_endpoint`` turns on trace export over OTLP/HTTP (e.g. ``http://otel-collector:4318``; a URL with no
    path gets ``/v1/traces``). ``/ready`` answers 503 while more than ``max_in_flight`` requests are running.
    """

    otlp_endpoint: str | None = Field(default=None, description="OTLP/HTTP collector; unset: no trace export")
    service_name: str = Field(default="ragserve", min_length=1, description="the service.name of exported spans")
    max_in_flight: int = Field(default=64, ge=1, description="requests in flight above which /ready answers 503")
    judge_sample_rate: float = Field(
        default=0.1, ge=0.0, le=1.0, description="share of answers whose groundedness is scored in the background"
    )
    json_logs: bool = Field(default=False, description="one JSON object per log line, with request and trace ids")

    @model_validator(mode="after")
    def _check_endpoint(self) -> ObservabilitySettings:
        if self.otlp_endpoint is not None and not self.otlp_endpoint.startswith(("http://", "https://")):
            raise ValueError(f"observability.otlp_endpoint must be an http(s) URL, got {self.otlp_endpoint!r}")
        return self


class Settings(BaseSettings):
    """The root of all settings. ``data_dir`` holds the SQLite database, the vector indexes and model caches."""

    model_config = SettingsConfigDict(
        env_prefix="RAGSERVE_",
        env_nested_delimiter="__",
        secrets_dir=None,
        extra="ignore",
        # A refused value is named, never echoed: it may hold a password or an API key.
        hide_input_in_errors=True,
    )

    data_dir: Path = Path("./ragserve-data")
    default_collection: str = "default"
    server: ServerSettings = ServerSettings()
    limits: LimitSettings = LimitSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    vector_index: VectorIndexSettings = VectorIndexSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    reranker: RerankerSettings = RerankerSettings()
    answer: AnswerSettings = AnswerSettings()
    jobs: JobSettings = JobSettings()
    parsing: ParsingSettings = ParsingSettings()
    store: StoreSettings = StoreSettings()
    index: IndexVersionSettings = IndexVersionSettings()
    queue: QueueSettings = QueueSettings()
    redis: RedisSettings = RedisSettings()
    auth: AuthSettings = AuthSettings()
    cors: CorsSettings = CorsSettings()
    headers: HeaderSettings = HeaderSettings()
    audit: AuditSettings = AuditSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    cache: CacheSettings = CacheSettings()
    llm: LLMSettings = LLMSettings()
    observability: ObservabilitySettings = ObservabilitySettings()

    @property
    def database_path(self) -> Path:
        return self.data_dir / "ragserve.sqlite3"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def model_cache_dir(self) -> Path:
        return self.embedding.cache_dir or self.data_dir / "models"
