"""The schema of the SQLite store (schema 3, with leases and the outbox), in PostgreSQL.

``chunks.collection_id`` is, as in SQLite, the index id of an index version (version 1's is the collection's
id). Chunk vectors are a pgvector column of the embedder's dimension; keyword search keeps analysed terms in
``postings`` with per-index-version totals in ``keyword_stats`` (BM25's document count and average length).

Revision ID: 0001
Revises:
Create Date: 2026-11-20
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE collections (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    retrieval jsonb NOT NULL DEFAULT '{{}}',
    active_index text,
    canary_index text,
    canary_share double precision NOT NULL DEFAULT 0,
    previous_index text
);
CREATE TABLE documents (
    id text PRIMARY KEY,
    collection_id text NOT NULL REFERENCES collections(id),
    external_id text,
    title text,
    source text,
    metadata jsonb NOT NULL DEFAULT '{{}}',
    status text NOT NULL,
    content_hash text,
    chunk_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    parsed bytea
);
CREATE UNIQUE INDEX documents_external_id ON documents(collection_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX documents_collection ON documents(collection_id, created_at);
CREATE INDEX documents_metadata ON documents USING gin (metadata jsonb_path_ops);
CREATE TABLE chunks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id text NOT NULL REFERENCES documents(id),
    collection_id text NOT NULL,
    ordinal integer NOT NULL,
    text text NOT NULL,
    section text,
    page integer,
    token_count integer NOT NULL,
    content_hash text NOT NULL,
    term_count integer NOT NULL,
    vector vector({dimension}) NOT NULL
);
CREATE INDEX chunks_document ON chunks(document_id, ordinal);
CREATE INDEX chunks_collection ON chunks(collection_id, id);
CREATE TABLE postings (
    index_id text NOT NULL,
    term text NOT NULL,
    chunk_id bigint NOT NULL,
    title_tf integer NOT NULL,
    body_tf integer NOT NULL,
    chunk_terms integer NOT NULL,
    PRIMARY KEY (index_id, term, chunk_id) INCLUDE (title_tf, body_tf, chunk_terms)
);
CREATE INDEX postings_chunk ON postings(chunk_id);
CREATE TABLE keyword_stats (
    index_id text PRIMARY KEY,
    chunk_count bigint NOT NULL DEFAULT 0,
    total_terms bigint NOT NULL DEFAULT 0
);
CREATE TABLE embedding_cache (key text PRIMARY KEY, vector bytea NOT NULL);
CREATE TABLE jobs (
    id text PRIMARY KEY,
    kind text NOT NULL,
    stage text NOT NULL,
    total integer NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE job_items (
    position bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    job_id text NOT NULL REFERENCES jobs(id),
    seq integer NOT NULL,
    document_id text NOT NULL,
    status text NOT NULL,
    payload bytea,
    error text,
    lease_owner text,
    lease_expires double precision,
    attempts integer NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX job_items_pending ON job_items(position) WHERE status = 'pending';
CREATE INDEX job_items_unfinished ON job_items(status) WHERE status IN ('pending', 'running', 'dead');
CREATE TABLE outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id text NOT NULL,
    seqs jsonb NOT NULL,
    priority integer NOT NULL,
    created_at double precision NOT NULL,
    published_at double precision
);
CREATE INDEX outbox_unpublished ON outbox(id) WHERE published_at IS NULL;
CREATE TABLE index_versions (
    index_id text PRIMARY KEY,
    collection_id text NOT NULL REFERENCES collections(id),
    version integer NOT NULL,
    config text NOT NULL,
    state text NOT NULL,
    built integer NOT NULL DEFAULT 0,
    total integer NOT NULL DEFAULT 0,
    error text,
    created_at timestamptz NOT NULL,
    UNIQUE (collection_id, version)
);
CREATE TABLE golden_sets (
    collection_id text PRIMARY KEY REFERENCES collections(id),
    body jsonb NOT NULL
);
CREATE TABLE idempotency_keys (
    key text PRIMARY KEY,
    request_hash text NOT NULL,
    job_id text NOT NULL,
    created_at timestamptz NOT NULL
);
"""


def upgrade() -> None:
    context = op.get_context()
    assert context.config is not None
    dimension = int(context.config.attributes["vector_dimension"])
    for statement in _SCHEMA.format(dimension=dimension).split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for table in (
        "idempotency_keys",
        "golden_sets",
        "index_versions",
        "outbox",
        "job_items",
        "jobs",
        "embedding_cache",
        "keyword_stats",
        "postings",
        "chunks",
        "documents",
        "collections",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table}")
