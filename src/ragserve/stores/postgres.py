"""The server store: collections, documents, chunks (with their pgvector vectors), BM25 postings and the
embedding cache in PostgreSQL, implementing the same seams as the embedded SQLite store.

Writes lock what they depend on, because PostgreSQL, unlike SQLite, runs writers concurrently: a document write
locks the document row and shares the collection row (index versions are created and deleted under that row's
exclusive lock), so a write never misses an index version that appears meanwhile. Search reads (keyword,
chunk ids, hits) may go to a read replica; everything else reads the primary.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from psycopg.types.json import Jsonb

from ragserve.domain import (
    DEFAULT_TENANT,
    UNRESTRICTED,
    Access,
    Acl,
    Chunk,
    Collection,
    CollectionSummary,
    Document,
    DocumentSource,
    DocumentStatus,
    IndexConfig,
    NewChunk,
    SearchFilters,
    SearchHit,
)
from ragserve.errors import IndexVersionsChangedError, NotFoundError
from ragserve.stores.codec import config_to_json, decode_parsed, encode_parsed
from ragserve.stores.job_records import acl_from_json, acl_to_json
from ragserve.stores.postgres_chunks import StatsDelta, delete_chunks, replace_chunks
from ragserve.stores.postgres_db import Connection, PostgresDatabase, utc_now
from ragserve.stores.postgres_search import acl_filter, bm25_query, metadata_filter
from ragserve.stores.protocol import ChunkChanges, DocumentFingerprint, DocumentWrite, StagedItem, Vectors

_DOCUMENT_COLUMNS = (
    "d.id, c.name, d.external_id, d.title, d.source, d.metadata, d.status, d.content_hash, d.chunk_count, "
    "d.created_at, d.updated_at, c.tenant, d.acl"
)
_FROM_DOCUMENTS = "FROM documents d JOIN collections c ON c.id = d.collection_id"


def _document(row: tuple[Any, ...]) -> Document:
    """A document from its ``_DOCUMENT_COLUMNS`` (jsonb arrives decoded, timestamps as aware datetimes)."""
    return Document(
        id=str(row[0]),
        collection=str(row[1]),
        external_id=None if row[2] is None else str(row[2]),
        title=None if row[3] is None else str(row[3]),
        source=None if row[4] is None else str(row[4]),
        metadata=row[5],
        status=DocumentStatus(str(row[6])),
        content_hash=None if row[7] is None else str(row[7]),
        chunk_count=int(row[8]),
        created_at=row[9],
        updated_at=row[10],
        tenant=str(row[11]),
        acl=acl_from_json(row[12]),
    )


def acl_json(acl: Acl | None) -> Jsonb | None:
    data = acl_to_json(acl)
    return None if data is None else Jsonb(data)


def is_restricted(acl: Acl | None) -> bool:
    """Whether the ACL keeps some of the tenant's callers out: what the ACL condition of a search checks."""
    return acl is not None and not acl.public


def create_collection(conn: Connection, name: str, tenant: str, config_json: str) -> str:
    """The id of the tenant's collection called ``name``, created if missing with its index version 1
    (configured by ``config_json``), inside the caller's transaction. Concurrent creators of one name get the
    same id."""
    collection_id = uuid.uuid4().hex
    now = utc_now()
    created = conn.execute(
        "INSERT INTO collections(id, name, tenant, created_at, active_index) VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (tenant, name) DO NOTHING RETURNING id",
        (collection_id, name, tenant, now, collection_id),
    ).fetchone()
    if created is None:
        row = conn.execute("SELECT id FROM collections WHERE tenant = %s AND name = %s", (tenant, name)).fetchone()
        assert row is not None
        return str(row[0])
    conn.execute(
        "INSERT INTO index_versions(index_id, collection_id, version, config, state, created_at) "
        "VALUES (%s, %s, 1, %s, 'ready', %s)",
        (collection_id, collection_id, config_json, now),
    )
    return collection_id


def live_index_ids(conn: Connection, collection_id: str) -> set[str]:
    rows = conn.execute(
        "SELECT index_id FROM index_versions WHERE collection_id = %s AND state IN ('building', 'ready')",
        (collection_id,),
    )
    return {str(r[0]) for r in rows}


class PostgresStore:
    """Implements ``DocumentStore``, ``ChunkStore``, ``KeywordIndex``, ``EmbeddingCache``,
    ``CollectionSettingsStore`` and ``RebuildSource``. New collections get index version 1 configured by
    ``index_config``; ``title_weight`` is BM25's weight of title terms (FTS5's column weight)."""

    def __init__(self, db: PostgresDatabase, index_config: IndexConfig, title_weight: float = 1.0) -> None:
        self._db = db
        self._title_weight = title_weight
        self._config_json = config_to_json(index_config)

    # --- collections -----------------------------------------------------------------------------------

    def ensure_collection(self, name: str, tenant: str = DEFAULT_TENANT) -> Collection:
        with self._db.write() as conn:
            create_collection(conn, name, tenant, self._config_json)
        return self.get_collection(name, tenant)

    def get_collection(self, name: str, tenant: str = DEFAULT_TENANT) -> Collection:
        with self._db.primary() as conn:
            row = conn.execute(
                "SELECT id, name, created_at, tenant FROM collections WHERE tenant = %s AND name = %s", (tenant, name)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"collection {name!r} not found")
        return Collection(str(row[0]), str(row[1]), row[2], str(row[3]))

    def list_collections(self) -> list[Collection]:
        with self._db.primary() as conn:
            rows = conn.execute("SELECT id, name, created_at, tenant FROM collections ORDER BY tenant, name").fetchall()
        return [Collection(str(r[0]), str(r[1]), r[2], str(r[3])) for r in rows]

    def summarize_collections(self, tenant: str = DEFAULT_TENANT) -> list[CollectionSummary]:
        with self._db.primary() as conn:
            rows = conn.execute(
                "SELECT c.name, count(d.id) FROM collections c LEFT JOIN documents d ON d.collection_id = c.id "
                "WHERE c.tenant = %s GROUP BY c.id ORDER BY c.name",
                (tenant,),
            ).fetchall()
        return [CollectionSummary(name=str(r[0]), document_count=int(r[1])) for r in rows]

    def get_retrieval_overrides(self, collection_id: str) -> dict[str, object]:
        with self._db.primary() as conn:
            row = conn.execute("SELECT retrieval FROM collections WHERE id = %s", (collection_id,)).fetchone()
        return {} if row is None else dict(row[0])

    def set_retrieval_overrides(self, collection_id: str, overrides: dict[str, object]) -> None:
        """Raises ``NotFoundError`` for an unknown collection."""
        with self._db.write() as conn:
            updated = conn.execute(
                "UPDATE collections SET retrieval = %s WHERE id = %s", (Jsonb(overrides), collection_id)
            ).rowcount
        if not updated:
            raise NotFoundError(f"collection {collection_id!r} not found")

    # --- documents ---------------------------------------------------------------------------------------

    def get_document(self, document_id: str) -> Document:
        with self._db.primary() as conn:
            row = conn.execute(f"SELECT {_DOCUMENT_COLUMNS} {_FROM_DOCUMENTS} WHERE d.id = %s", (document_id,))
            found = row.fetchone()
        if found is None:
            raise NotFoundError(f"document {document_id!r} not found")
        return _document(found)

    def find_document(self, collection_id: str, external_id: str) -> Document | None:
        with self._db.primary() as conn:
            row = conn.execute(
                f"SELECT {_DOCUMENT_COLUMNS} {_FROM_DOCUMENTS} WHERE d.collection_id = %s AND d.external_id = %s",
                (collection_id, external_id),
            ).fetchone()
        return None if row is None else _document(row)

    def list_documents(
        self, collection: str | None, limit: int, offset: int, access: Access = UNRESTRICTED
    ) -> tuple[list[Document], int]:
        where = "WHERE c.tenant = %s"
        params: list[object] = [access.tenant]
        if collection:
            where, params = where + " AND c.name = %s", [*params, collection]
        clause, acl_params = acl_filter(access)
        where, params = where + clause, [*params, *acl_params]
        with self._db.primary() as conn:
            total = conn.execute(f"SELECT count(*) {_FROM_DOCUMENTS} {where}", params).fetchone()
            rows = conn.execute(
                f"SELECT {_DOCUMENT_COLUMNS} {_FROM_DOCUMENTS} {where} "
                "ORDER BY d.created_at DESC, d.id LIMIT %s OFFSET %s",
                [*params, limit, offset],
            ).fetchall()
        return [_document(r) for r in rows], int(total[0] if total else 0)

    def set_acl(self, document_id: str, acl: Acl | None) -> None:
        with self._db.write() as conn:
            updated = conn.execute(
                "UPDATE documents SET acl = %s, restricted = %s, updated_at = %s WHERE id = %s",
                (acl_json(acl), is_restricted(acl), utc_now(), document_id),
            ).rowcount
        if not updated:
            raise NotFoundError(f"document {document_id!r} not found")

    def tenant_chunk_count(self, tenant: str) -> int:
        with self._db.primary() as conn:
            row = conn.execute(
                f"SELECT coalesce(sum(d.chunk_count), 0) {_FROM_DOCUMENTS} WHERE c.tenant = %s", (tenant,)
            ).fetchone()
        return int(row[0]) if row else 0

    def has_restricted_documents(self, collection_id: str) -> bool:
        with self._db.primary() as conn:
            row = conn.execute(
                "SELECT 1 FROM documents WHERE collection_id = %s AND restricted LIMIT 1", (collection_id,)
            ).fetchone()
        return row is not None

    def delete_document(self, document_id: str) -> dict[str, list[int]]:
        with self._db.write() as conn:
            if conn.execute("SELECT 1 FROM documents WHERE id = %s FOR UPDATE", (document_id,)).fetchone() is None:
                raise NotFoundError(f"document {document_id!r} not found")
            removed: dict[str, list[int]] = {}
            for index_id, cid in conn.execute(
                "SELECT collection_id, id FROM chunks WHERE document_id = %s ORDER BY id", (document_id,)
            ).fetchall():
                removed.setdefault(str(index_id), []).append(int(cid))
            stats = StatsDelta()
            delete_chunks(conn, [cid for ids in removed.values() for cid in ids], stats)
            conn.execute("DELETE FROM documents WHERE id = %s", (document_id,))
            stats.apply(conn)
        return removed

    def document_fingerprints(self, collection_id: str, filters: SearchFilters) -> list[DocumentFingerprint]:
        clause, params = metadata_filter(filters)
        with self._db.primary() as conn:
            rows = conn.execute(
                "SELECT d.id, d.external_id, d.content_hash FROM documents d "
                f"WHERE d.collection_id = %s AND d.external_id IS NOT NULL{clause} ORDER BY d.external_id",
                [collection_id, *params],
            ).fetchall()
        return [DocumentFingerprint(str(r[0]), str(r[1]), None if r[2] is None else str(r[2])) for r in rows]

    def write_document(self, item: StagedItem, write: DocumentWrite) -> dict[str, ChunkChanges]:
        source = item.input.filename or item.input.external_id
        with self._db.write() as conn:
            found = conn.execute("SELECT 1 FROM documents WHERE id = %s FOR UPDATE", (item.document_id,))
            if found.fetchone() is None:
                raise NotFoundError(f"document {item.document_id!r} was deleted before it was ingested")
            # Shared with other writers; index versions are created and deleted under the exclusive lock.
            route = conn.execute(
                "SELECT active_index FROM collections WHERE id = %s FOR SHARE", (item.collection_id,)
            ).fetchone()
            if route is None or live_index_ids(conn, item.collection_id) != set(write.chunks):
                raise IndexVersionsChangedError(f"collection {item.collection_id} now has other index versions")
            stats = StatsDelta()
            changes = {
                index_id: replace_chunks(conn, index_id, item.document_id, write.title, chunks, stats)
                for index_id, chunks in sorted(write.chunks.items())
            }
            conn.execute(
                "UPDATE documents SET title = %s, source = %s, metadata = %s, acl = %s, restricted = %s, "
                "status = %s, content_hash = %s, chunk_count = %s, parsed = %s, updated_at = %s WHERE id = %s",
                (
                    write.title,
                    source,
                    Jsonb(item.input.metadata),
                    acl_json(item.input.acl),
                    is_restricted(item.input.acl),
                    DocumentStatus.READY.value,
                    write.content_hash,
                    len(write.chunks.get(str(route[0]), ())),
                    encode_parsed(write.parsed),
                    utc_now(),
                    item.document_id,
                ),
            )
            conn.execute(
                "UPDATE job_items SET status = 'done', payload = NULL WHERE job_id = %s AND seq = %s",
                (item.job_id, item.seq),
            )
            conn.execute("UPDATE jobs SET updated_at = %s WHERE id = %s", (utc_now(), item.job_id))
            stats.apply(conn)
        return changes

    # --- rebuilding an index version --------------------------------------------------------------------

    def ready_document_count(self, collection_id: str) -> int:
        with self._db.primary() as conn:
            row = conn.execute(
                "SELECT count(*) FROM documents WHERE collection_id = %s AND status = 'ready'", (collection_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    def document_sources(self, collection_id: str, after: str | None, limit: int) -> list[DocumentSource]:
        with self._db.primary() as conn:
            rows = conn.execute(
                "SELECT id, title, content_hash, parsed FROM documents WHERE collection_id = %s "
                "AND status = 'ready' AND id > %s ORDER BY id LIMIT %s",
                (collection_id, after or "", limit),
            ).fetchall()
        return [
            DocumentSource(
                document_id=str(r[0]),
                title=None if r[1] is None else str(r[1]),
                content_hash=str(r[2]),
                parsed=None if r[3] is None else decode_parsed(bytes(r[3])),
            )
            for r in rows
        ]

    def write_version_chunks(
        self, index_id: str, source: DocumentSource, chunks: Sequence[NewChunk]
    ) -> ChunkChanges | None:
        with self._db.write() as conn:
            row = conn.execute(
                "SELECT d.content_hash FROM documents d JOIN index_versions v ON v.collection_id = d.collection_id "
                "WHERE d.id = %s AND v.index_id = %s AND v.state = 'building' FOR UPDATE OF d",
                (source.document_id, index_id),
            ).fetchone()
            if row is None or row[0] != source.content_hash:
                return None
            stats = StatsDelta()
            changes = replace_chunks(conn, index_id, source.document_id, source.title, chunks, stats)
            stats.apply(conn)
            return changes

    # --- chunks --------------------------------------------------------------------------------------------

    def get_chunks(self, document_id: str) -> list[Chunk]:
        """The document's chunks in its collection's active index version."""
        with self._db.primary() as conn:
            rows = conn.execute(
                "SELECT c.id, c.document_id, c.ordinal, c.text, c.section, c.page, c.token_count, c.content_hash "
                "FROM chunks c JOIN documents d ON d.id = c.document_id JOIN collections k ON k.id = d.collection_id "
                "WHERE c.document_id = %s AND c.collection_id = k.active_index ORDER BY c.ordinal",
                (document_id,),
            ).fetchall()
        return [Chunk(*row) for row in rows]

    def hits(self, scored: Sequence[tuple[int, float]], access: Access | None = None) -> list[SearchHit]:
        """With ``access``, only chunks of its tenant that its ACLs admit, read from the primary: a replica
        that lags behind an ACL change must not let a chunk through."""
        if not scored:
            return []
        clause, params = acl_filter(access)
        if access is not None:
            clause += " AND d.collection_id IN (SELECT id FROM collections WHERE tenant = %s)"
            params = [*params, access.tenant]
        reader = self._db.primary if access is not None else self._db.replica
        with reader() as conn:
            rows = conn.execute(
                "SELECT c.id, c.document_id, d.external_id, d.title, d.source, c.text, d.metadata, c.section, "
                f"c.page FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id = ANY(%s){clause}",
                [[cid for cid, _ in scored], *params],
            ).fetchall()
        found = {int(row[0]): row for row in rows}
        hits = []
        for cid, score in scored:
            row = found.get(cid)
            if row is None:
                continue
            hits.append(
                SearchHit(
                    chunk_id=cid,
                    document_id=str(row[1]),
                    external_id=None if row[2] is None else str(row[2]),
                    title=None if row[3] is None else str(row[3]),
                    source=None if row[4] is None else str(row[4]),
                    text=str(row[5]),
                    score=float(score),
                    metadata=row[6],
                    section=None if row[7] is None else str(row[7]),
                    page=None if row[8] is None else int(row[8]),
                )
            )
        return hits

    def chunk_ids(self, collection_id: str, filters: SearchFilters) -> list[int]:
        clause, params = metadata_filter(filters)
        join = " JOIN documents d ON d.id = c.document_id" if filters else ""
        with self._db.replica() as conn:
            rows = conn.execute(
                f"SELECT c.id FROM chunks c{join} WHERE c.collection_id = %s{clause} ORDER BY c.id",
                [collection_id, *params],
            ).fetchall()
        return [int(r[0]) for r in rows]

    def chunk_vectors(self, ids: Sequence[int]) -> Vectors:
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        with self._db.primary() as conn:
            rows = conn.execute("SELECT id, vector FROM chunks WHERE id = ANY(%s)", (list(ids),)).fetchall()
        found = {int(cid): vector.to_numpy() for cid, vector in rows}
        missing = [cid for cid in ids if cid not in found]
        if missing:
            raise NotFoundError(f"{len(missing)} chunk vectors not found, e.g. {missing[0]}")
        return np.stack([found[cid] for cid in ids]).astype(np.float32)

    # --- keyword search ---------------------------------------------------------------------------------

    def term_chunk_counts(self, collection_id: str, terms: Sequence[str]) -> dict[str, int]:
        if not terms:
            return {}
        with self._db.replica() as conn:
            rows = conn.execute(
                "SELECT term, count(*) FROM postings WHERE index_id = %s AND term = ANY(%s) GROUP BY term",
                (collection_id, sorted(set(terms))),
            ).fetchall()
        return {str(term): int(count) for term, count in rows}

    def keyword_search(
        self, collection_id: str, terms: Sequence[str], k: int, filters: SearchFilters
    ) -> list[tuple[int, float]]:
        if not terms:
            return []
        sql, params = bm25_query(collection_id, terms, k, filters, self._title_weight)
        with self._db.replica() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [(int(cid), float(score)) for cid, score in rows]

    # --- embedding cache --------------------------------------------------------------------------------

    def get_vectors(self, keys: Sequence[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        with self._db.primary() as conn:
            rows = conn.execute("SELECT key, vector FROM embedding_cache WHERE key = ANY(%s)", (list(keys),))
            return {str(key): bytes(blob) for key, blob in rows.fetchall()}

    def put_vectors(self, items: Sequence[tuple[str, bytes]]) -> None:
        if items:
            with self._db.write() as conn:
                conn.cursor().executemany(
                    "INSERT INTO embedding_cache(key, vector) VALUES (%s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET vector = excluded.vector",
                    list(items),
                )

    # --- evaluation helpers --------------------------------------------------------------------------------

    def external_ids(self, collection: str) -> set[str]:
        """External ids of a collection's documents (empty if the collection does not exist)."""
        with self._db.primary() as conn:
            rows = conn.execute(
                f"SELECT d.external_id {_FROM_DOCUMENTS} WHERE c.name = %s AND c.tenant = 'default' "
                "AND d.external_id IS NOT NULL",
                (collection,),
            ).fetchall()
        return {str(r[0]) for r in rows}

    def chunk_documents(self, chunk_ids: Sequence[int]) -> dict[int, str]:
        if not chunk_ids:
            return {}
        with self._db.replica() as conn:
            rows = conn.execute("SELECT id, document_id FROM chunks WHERE id = ANY(%s)", (list(chunk_ids),)).fetchall()
        return {int(cid): str(doc) for cid, doc in rows}

    def external_ids_of(self, chunk_ids: Sequence[int]) -> list[str]:
        """Documents' external ids (or ids) in order of their first chunk in ``chunk_ids``: max-passage."""
        if not chunk_ids:
            return []
        with self._db.replica() as conn:
            rows = conn.execute(
                "SELECT c.id, coalesce(d.external_id, d.id) FROM chunks c JOIN documents d ON d.id = c.document_id "
                "WHERE c.id = ANY(%s)",
                (list(chunk_ids),),
            ).fetchall()
        found = {int(cid): str(ext) for cid, ext in rows}
        ranked: dict[str, None] = {}
        for cid in chunk_ids:
            if cid in found:
                ranked.setdefault(found[cid], None)
        return list(ranked)
