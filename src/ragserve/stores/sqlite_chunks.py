"""Writing one document's chunks of one index version: rows whose text is unchanged are kept (nothing to
re-embed), new ones are inserted with their FTS5 row, the rest deleted with theirs."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ragserve.domain import NewChunk
from ragserve.stores.analyzer import analyze_to_string
from ragserve.stores.protocol import ChunkChanges
from ragserve.stores.sqlite_db import fts_table
from ragserve.stores.sqlite_sql import id_batches


def replace_chunks(
    conn: sqlite3.Connection, index_id: str, document_id: str, title: str | None, chunks: Sequence[NewChunk]
) -> ChunkChanges:
    """Make the document's chunks in one index version be ``chunks``, keeping identical existing rows."""
    reusable: dict[tuple[str, int | None], list[int]] = {}
    # "+collection_id" keeps SQLite on the document's index: left to itself it takes chunks_collection, which
    # also yields ORDER BY id, and walks every chunk of the collection on each write.
    for cid, chash, page in conn.execute(
        "SELECT id, content_hash, page FROM chunks WHERE document_id = ? AND +collection_id = ? ORDER BY id",
        (document_id, index_id),
    ):
        reusable.setdefault((chash, page), []).append(cid)
    added = [(_put_chunk(conn, index_id, document_id, title, chunk, reusable), chunk.vector) for chunk in chunks]
    removed = [cid for ids in reusable.values() for cid in ids]
    delete_index_chunks(conn, index_id, removed)
    fresh = [(cid, vector) for cid, vector in added if cid is not None]
    return ChunkChanges(
        added=tuple(cid for cid, _ in fresh),
        added_vectors=tuple(vector for _, vector in fresh),
        removed=tuple(removed),
    )


def _put_chunk(
    conn: sqlite3.Connection,
    index_id: str,
    document_id: str,
    title: str | None,
    chunk: NewChunk,
    reusable: dict[tuple[str, int | None], list[int]],
) -> int | None:
    """Insert a chunk, or keep an identical existing one (returns None then: nothing to index)."""
    same = reusable.get((chunk.content_hash, chunk.page))
    if same:
        conn.execute("UPDATE chunks SET ordinal = ? WHERE id = ?", (chunk.ordinal, same.pop(0)))
        return None
    cursor = conn.execute(
        "INSERT INTO chunks(document_id, collection_id, ordinal, text, section, page, token_count, "
        "content_hash, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            document_id,
            index_id,
            chunk.ordinal,
            chunk.text,
            chunk.section,
            chunk.page,
            chunk.token_count,
            chunk.content_hash,
            chunk.vector,
        ),
    )
    chunk_id = int(cursor.lastrowid or 0)
    body = analyze_to_string(f"{chunk.section or ''}\n{chunk.text}")
    conn.execute(
        f"INSERT INTO {fts_table(index_id)}(rowid, title, body) VALUES (?, ?, ?)",
        (chunk_id, analyze_to_string(title or ""), body),
    )
    return chunk_id


def delete_index_chunks(conn: sqlite3.Connection, index_id: str, ids: Sequence[int]) -> None:
    for batch in id_batches(ids):
        marks = ", ".join("?" for _ in batch)
        conn.execute(f"DELETE FROM {fts_table(index_id)} WHERE rowid IN ({marks})", list(batch))
        conn.execute(f"DELETE FROM chunks WHERE id IN ({marks})", list(batch))
