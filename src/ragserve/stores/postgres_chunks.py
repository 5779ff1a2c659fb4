"""Writing and deleting chunks in PostgreSQL, with their keyword postings and BM25 totals, inside the caller's
transaction: the keyword index and the vector column can never disagree with the chunk rows.

A chunk's postings hold each analysed term's frequency in its title and in its body (``analyzer.py``: stop
words removed, Snowball stems) and the chunk's length in terms; ``keyword_stats`` keeps, per index id, the
chunk count and total length, the corpus statistics of BM25, as FTS5 keeps them per table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from ragserve.domain import NewChunk
from ragserve.stores.analyzer import analyze
from ragserve.stores.postgres_db import Connection
from ragserve.stores.protocol import ChunkChanges


class StatsDelta:
    """Changes to the BM25 totals of index versions, applied once at the end of a transaction in index-id
    order: concurrent writers then lock the totals rows briefly and always in the same order (no deadlock)."""

    def __init__(self) -> None:
        self._deltas: dict[str, list[int]] = {}

    def add(self, index_id: str, chunks: int, terms: int) -> None:
        delta = self._deltas.setdefault(index_id, [0, 0])
        delta[0] += chunks
        delta[1] += terms

    def apply(self, conn: Connection) -> None:
        for index_id in sorted(self._deltas):
            chunks, terms = self._deltas[index_id]
            if chunks or terms:
                conn.execute(
                    "INSERT INTO keyword_stats(index_id, chunk_count, total_terms) VALUES (%s, %s, %s) "
                    "ON CONFLICT (index_id) DO UPDATE SET chunk_count = keyword_stats.chunk_count + "
                    "excluded.chunk_count, total_terms = keyword_stats.total_terms + excluded.total_terms",
                    (index_id, chunks, terms),
                )


def replace_chunks(
    conn: Connection,
    index_id: str,
    document_id: str,
    title: str | None,
    chunks: Sequence[NewChunk],
    stats: StatsDelta,
) -> ChunkChanges:
    """Make the document's chunks in one index version be ``chunks``, keeping identical existing rows."""
    reusable: dict[tuple[str, int | None], list[int]] = {}
    for cid, chash, page in conn.execute(
        "SELECT id, content_hash, page FROM chunks WHERE document_id = %s AND collection_id = %s ORDER BY id",
        (document_id, index_id),
    ):
        reusable.setdefault((str(chash), page), []).append(int(cid))
    kept: list[tuple[int, int]] = []
    fresh: list[NewChunk] = []
    for chunk in chunks:
        same = reusable.get((chunk.content_hash, chunk.page))
        if same:
            kept.append((chunk.ordinal, same.pop(0)))
        else:
            fresh.append(chunk)
    if kept:
        conn.cursor().executemany("UPDATE chunks SET ordinal = %s WHERE id = %s", kept)
    removed = [cid for ids in reusable.values() for cid in ids]
    delete_chunks(conn, removed, stats)
    added = insert_chunks(conn, index_id, document_id, title, fresh, stats)
    return ChunkChanges(
        added=tuple(added),
        added_vectors=tuple(chunk.vector for chunk in fresh),
        removed=tuple(removed),
    )


def insert_chunks(
    conn: Connection,
    index_id: str,
    document_id: str,
    title: str | None,
    chunks: Sequence[NewChunk],
    stats: StatsDelta,
) -> list[int]:
    """Insert chunks with their vectors and postings; returns their new ids in order."""
    if not chunks:
        return []
    title_terms = Counter(analyze(title or ""))
    bodies = [Counter(analyze(f"{chunk.section or ''}\n{chunk.text}")) for chunk in chunks]
    lengths = [title_terms.total() + body.total() for body in bodies]
    rows = [
        (
            document_id,
            index_id,
            chunk.ordinal,
            chunk.text,
            chunk.section,
            chunk.page,
            chunk.token_count,
            chunk.content_hash,
            length,
            np.frombuffer(chunk.vector, dtype="<f4"),
        )
        for chunk, length in zip(chunks, lengths, strict=True)
    ]
    cursor = conn.cursor()
    cursor.executemany(
        "INSERT INTO chunks(document_id, collection_id, ordinal, text, section, page, token_count, content_hash, "
        "term_count, vector) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        rows,
        returning=True,
    )
    ids: list[int] = []
    while True:
        row = cursor.fetchone()
        assert row is not None
        ids.append(int(row[0]))
        if not cursor.nextset():
            break
    _write_postings(conn, index_id, ids, title_terms, bodies, lengths)
    stats.add(index_id, len(ids), sum(lengths))
    return ids


def _write_postings(
    conn: Connection,
    index_id: str,
    ids: Sequence[int],
    title_terms: Counter[str],
    bodies: Sequence[Counter[str]],
    lengths: Sequence[int],
) -> None:
    with conn.cursor().copy(
        "COPY postings (index_id, term, chunk_id, title_tf, body_tf, chunk_terms) FROM STDIN"
    ) as copy:
        for chunk_id, body, length in zip(ids, bodies, lengths, strict=True):
            for term in title_terms.keys() | body.keys():
                copy.write_row((index_id, term, chunk_id, title_terms[term], body[term], length))


def delete_chunks(conn: Connection, ids: Iterable[int], stats: StatsDelta) -> None:
    """Delete chunks and their postings, taking their lengths off their index versions' totals."""
    ids = list(ids)
    if not ids:
        return
    conn.execute("DELETE FROM postings WHERE chunk_id = ANY(%s)", (ids,))
    for index_id, count, terms in conn.execute(
        "WITH gone AS (DELETE FROM chunks WHERE id = ANY(%s) RETURNING collection_id, term_count) "
        "SELECT collection_id, count(*), coalesce(sum(term_count), 0) FROM gone GROUP BY collection_id",
        (ids,),
    ):
        stats.add(str(index_id), -int(count), -int(terms))
